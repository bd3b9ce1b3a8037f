"""New heads on pretrained checkpoints (`kzoo convert --task T --labels ...`, kzoo.from_preset on a model dir),
labels and problem_type in the model dir, and kzoo.save: the encoder keeps the checkpoint's weights (checked
against Transformers' own model on the same file), the head starts as Transformers initialises one."""

import json

import numpy as np
import pytest

import kzoo
from families import NAMES, hf_classes, masked_lm_class, tiny_hf_config
from kzoo.converters import spec_of
from kzoo.converters.convert import convert
from kzoo.converters.readers import CheckpointError
from kzoo.converters.verify import reference_inputs, run_reference
from kzoo.families import FAMILIES
from kzoo.models import outputs
from reference import convert_and_verify, make_checkpoint


def _inputs(model, vocab=99, pad=1):
    inputs = reference_inputs(vocab, pad_id=pad, num_segments=1)
    return {k: inputs.get(k, np.full_like(inputs["token_ids"], -1)) for k in model.backbone.input}


@pytest.mark.parametrize("name", NAMES)
def test_token_classifier_on_a_masked_lm_checkpoint(tmp_path, name):
    src = make_checkpoint(tmp_path / "ref", masked_lm_class(name), tiny_hf_config(name))
    summary = convert(src, tmp_path / "out", task="token_classifier", labels=["O", "B-PER", "I-PER"])
    assert summary["initialized"] == ["classifier/bias", "classifier/kernel"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["labels"] == {"0": "O", "1": "B-PER", "2": "I-PER"}
    assert config["task_config"]["num_classes"] == 3

    model = kzoo.load(tmp_path / "out")
    inputs = _inputs(model)
    ours = np.asarray(model.backbone(inputs)["sequence_output"])
    theirs = run_reference(src, "backbone", spec_of(FAMILIES[name]),
                           {k: v for k, v in inputs.items() if k != "lang_ids"})["sequence_output"]
    assert np.max(np.abs(ours - theirs)) <= 1e-4  # the encoder is the checkpoint's
    kernel = model.get_layer("classifier").kernel.numpy()  # Transformers: N(0, initializer_range), bias 0
    assert abs(kernel.std() - 0.02) < 0.006 and not model.get_layer("classifier").bias.numpy().any()
    assert outputs(model, inputs)["logits"].shape == (*inputs["token_ids"].shape, 3)


def test_a_classifier_needs_a_pooler_the_masked_lm_lacks(tmp_path):
    src = make_checkpoint(tmp_path / "ref", "AlbertForMaskedLM", tiny_hf_config("albert"))
    summary = convert(src, tmp_path / "out", task="classifier", num_labels=4)
    assert summary["initialized"] == ["classifier/bias", "classifier/kernel", "pooler/bias", "pooler/kernel"]
    assert "4 new weights initialised" in summary["report"]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["labels"] == {
        str(i): f"LABEL_{i}" for i in range(4)}


def test_relabelling_a_classifier_replaces_its_head(tmp_path):
    src = make_checkpoint(tmp_path / "ref", "XLMRobertaForSequenceClassification", tiny_hf_config("xlm-roberta"),
                          num_labels=3)
    summary = convert(src, tmp_path / "out", labels=["neg", "pos"])
    assert summary["task"] == "classifier"
    assert summary["initialized"] == ["classifier/bias", "classifier/kernel"]  # out_proj: 3 -> 2 classes
    assert "replacing classifier.out_proj.bias, classifier.out_proj.weight" in summary["report"]
    same = convert(src, tmp_path / "same", labels=["a", "b", "c"])  # the same size: the checkpoint's head
    assert same["initialized"] == []


def test_a_checkpoint_missing_weights_still_fails_without_a_new_head(tmp_path):
    src = make_checkpoint(tmp_path / "ref", "AlbertForMaskedLM", tiny_hf_config("albert"))
    hf = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**hf, "architectures": ["AlbertForTokenClassification"]}))
    with pytest.raises(CheckpointError, match="2 weights missing"):
        convert(src, tmp_path / "out")


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="question_answering", labels=["a", "b"]), "has no classes"),
    (dict(task="classifier", labels=["a", "a"]), "distinct"),
    (dict(task="classifier", labels=["a", "b"], num_labels=3), "2 labels but num_classes=3"),
    (dict(task="classifier", num_labels=-2), "number of labels must be a whole number >= 1, got -2"),
    (dict(task="token_classifier", problem_type="regression"), "problem_type is for a classifier"),
    (dict(task="classifier", problem_type="ordinal"), "problem_type 'ordinal'"),
])
def test_bad_head_options_are_one_line_errors(tmp_path, kwargs, message):
    src = make_checkpoint(tmp_path / "ref", "AlbertModel", tiny_hf_config("albert"))
    with pytest.raises(CheckpointError, match=message):
        convert(src, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_problem_type_is_carried_from_the_checkpoint(tmp_path, problem_type):
    num_labels = 1 if problem_type == "regression" else 3
    summary, _ = convert_and_verify(tmp_path, "AlbertForSequenceClassification", tiny_hf_config("albert"),
                                    num_labels=num_labels, problem_type=problem_type)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == problem_type and len(config["labels"]) == num_labels


@pytest.mark.parametrize("summary", [
    dict(summary_type="mean", summary_activation="tanh"),
    dict(summary_type="last", summary_proj_to_labels=False),
    dict(summary_type="first", summary_use_proj=False, num_labels=32),
], ids=["mean-tanh", "last-hidden", "no-projection"])
@pytest.mark.parametrize("cls", ["XLMForSequenceClassification", "XLMForMultipleChoice"])
def test_xlm_sequence_summary_options(tmp_path, cls, summary):
    if cls == "XLMForMultipleChoice" and not summary.get("summary_proj_to_labels", True):
        summary = {**summary, "num_labels": 32}  # (its logits_proj takes num_labels inputs)
    result, _ = convert_and_verify(tmp_path, cls, tiny_hf_config("xlm", **summary))
    assert result["task"] == hf_classes("xlm")[cls]


def test_from_preset_save_and_load_round_trip(tmp_path):
    src = make_checkpoint(tmp_path / "ref", "XLMRobertaModel", tiny_hf_config("xlm-roberta"))
    convert(src, tmp_path / "encoder")
    model = kzoo.from_preset(tmp_path / "encoder", task="classifier", labels=["neg", "pos"])
    assert model.kzoo_initialized == ["classifier/bias", "classifier/kernel", "classifier_dense/bias",
                                      "classifier_dense/kernel"]
    inputs = _inputs(model)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(inputs, np.array([0, 1, 0]), epochs=1, verbose=0)  # (the weights move)
    config = kzoo.save(model, tmp_path / "trained", tokenizer=tmp_path / "encoder")
    assert config["labels"] == {"0": "neg", "1": "pos"} and config["task"] == "classifier"
    again = kzoo.load(tmp_path / "trained")
    np.testing.assert_array_equal(np.asarray(model(inputs)), np.asarray(again(inputs)))
    with pytest.raises(kzoo.errors.ModelDirError, match="already exists"):
        kzoo.save(model, tmp_path / "trained")
    with pytest.raises(kzoo.errors.ModelDirError, match="tokenizer='.*nope': no such directory"):
        kzoo.save(model, tmp_path / "other", tokenizer=tmp_path / "nope")
    assert not (tmp_path / "other").exists()
    for labels, message in (("neg,pos", "not the str 'neg,pos'.*labels=\\['neg', 'pos'\\]"),
                            (["a", None], "non-empty strings"), (["a", ""], "non-empty strings")):
        with pytest.raises(kzoo.errors.ModelDirError, match=message):  # (a str was split into characters)
            kzoo.from_preset(tmp_path / "encoder", task="classifier", labels=labels)


def test_save_a_model_built_in_python(tmp_path):
    from families import tiny_backbone
    from kzoo.models import build_model

    built = build_model({"architecture": "xlm", "task": "multiple_choice", "backbone": tiny_backbone("xlm")})
    config = kzoo.save(built, tmp_path / "mc")
    assert (config["architecture"], config["task"]) == ("xlm", "multiple_choice")
    again = kzoo.load(tmp_path / "mc")
    inputs = {k: np.ones((2, 3, 5), "int32") for k in built.input}
    assert np.asarray(again(inputs)).shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(built(inputs)), np.asarray(again(inputs)))


@pytest.mark.parametrize("family", ["albert", "xlm-roberta"])
def test_multiple_choice_runs_through_the_runtime_and_its_exports(tmp_path, family):
    """Inputs [batch, choices, length] through the runtime, a SavedModel (its batch padded to a bucket, the
    choices axis as it is) and a .tflite: PyTorch's logits; a text signature it has not is a one-line error."""
    import torch
    import transformers

    from kzoo import runtime
    from kzoo.errors import RunnerError
    from kzoo.export import export_savedmodel, export_tflite
    from kzoo.export.common import ExportError

    cls = "AlbertForMultipleChoice" if family == "albert" else "XLMRobertaForMultipleChoice"
    src = make_checkpoint(tmp_path / "ref", cls, tiny_hf_config(family))
    convert(src, tmp_path / "out")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 60, (3, 4, 7)).astype("int32")
    mask = np.ones_like(ids)
    mask[0, 1, 4:] = mask[2, 3, 2:] = 0
    inputs = {"token_ids": np.where(mask == 1, ids, 0).astype("int32"), "padding_mask": mask}
    reference = getattr(transformers, cls).from_pretrained(src).eval()
    with torch.no_grad():
        want = reference(input_ids=torch.as_tensor(inputs["token_ids"], dtype=torch.long),
                         attention_mask=torch.as_tensor(mask, dtype=torch.long)).logits.numpy()
    assert export_savedmodel(tmp_path / "out", tmp_path / "sm")["ok"]
    assert export_tflite(tmp_path / "out", tmp_path / "mc.tflite")["ok"]
    for path in ("out", "sm", "mc.tflite"):
        runner = runtime.load(str(tmp_path / path))
        got = runner(inputs)["logits"]
        assert got.shape == (3, 4) and np.abs(got - want).max() <= 1e-4, path
        with pytest.raises(RunnerError, match=r"every input is one \[batch, choices, length\] array"):
            runner({"token_ids": np.ones((2, 6), "int32"), "padding_mask": np.ones((2, 6), "int32")})
    with pytest.raises(ExportError, match="no text signature for task 'multiple_choice'"):
        export_tflite(tmp_path / "out", tmp_path / "text.tflite", with_tokenizer=True)
    assert not (tmp_path / "text.tflite").exists()
