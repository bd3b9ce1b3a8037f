"""XLM's own options against the PyTorch reference (Transformers 5.23), max abs diff <= 1e-4
(what every family gets: tests/models/test_parity.py).

Every parameter of the reference is random (tests/reference.py); verify() runs a right- and
a left-padded batch with token types 0/1 and language ids that differ per row and within rows.
"""

import json
import logging

import numpy as np
import pytest
import torch
import transformers

from kzoo.io import modeldir
from kzoo.models import build_model, load_model
from kzoo.converters import xlm as spec
from kzoo.converters.convert import convert
from kzoo.converters.readers import CheckpointError
from kzoo.converters.verify import reference_inputs, verify
from kzoo.models.xlm import SinusoidalPositions
from reference import convert_and_verify, make_checkpoint

# Like xlm-mlm-enfr-1024: two languages with language embeddings.
TINY_XLM = dict(
    vocab_size=99, emb_dim=32, n_layers=3, n_heads=4, max_position_embeddings=40, n_langs=2,
    use_lang_emb=True, dropout=0.1, attention_dropout=0.1, layer_norm_eps=1e-12,
    pad_token_id=2, bos_token_id=0, eos_token_id=1, unk_index=3, mask_index=5,
    lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"},
)
# Like xlm-mlm-100-1280: several languages, but no language embedding table.
TINY_XLM_100 = {**TINY_XLM, "n_langs": 5, "use_lang_emb": False,
                "lang2id": {c: i for i, c in enumerate("ab cd en fr zh".split())},
                "id2lang": dict(enumerate("ab cd en fr zh".split()))}
CLASSES = ["XLMModel", "XLMWithLMHeadModel"]


def check(tmp_path, cls_name, config=TINY_XLM, **kwargs):
    return convert_and_verify(tmp_path, cls_name, config, **kwargs)


@pytest.mark.parametrize("cls_name", CLASSES)
def test_every_class(tmp_path, cls_name):
    summary, report = check(tmp_path, cls_name)
    assert summary["unexpected"] == []
    assert {r["output"] for r in report["rows"]} == {
        "XLMModel": {"sequence_output"},
        "XLMWithLMHeadModel": {"logits", "sequence_output"},
    }[cls_name]
    config = modeldir.read_config(tmp_path / "out")
    assert config["task"] == {"XLMModel": "backbone", "XLMWithLMHeadModel": "masked_lm"}[cls_name]
    assert config["backbone"]["languages"] == ["en", "fr"]
    assert config["backbone"]["trained_causal"] is False
    assert config["backbone"]["pad_token_id"] == 2


@pytest.mark.parametrize("cls_name", CLASSES)
def test_languages_without_embeddings(tmp_path, cls_name):
    summary, _ = check(tmp_path, cls_name, TINY_XLM_100)
    model = load_model(tmp_path / "out")
    assert not any("language_embedding" in v.path for v in model.weights)
    assert modeldir.read_config(tmp_path / "out")["backbone"]["languages"][2] == "en"


def test_monolingual(tmp_path):
    check(tmp_path, "XLMWithLMHeadModel", TINY_XLM, n_langs=1, lang2id=None, id2lang=None)


@pytest.mark.parametrize("cls_name", CLASSES)
def test_causal(tmp_path, cls_name):
    check(tmp_path, cls_name, causal=True)
    assert modeldir.read_config(tmp_path / "out")["backbone"]["trained_causal"] is True


def test_relu(tmp_path):
    check(tmp_path, "XLMWithLMHeadModel", gelu_activation=False)
    assert modeldir.read_config(tmp_path / "out")["backbone"]["activation"] == "relu"


def test_sinusoidal_positions(tmp_path):
    check(tmp_path, "XLMWithLMHeadModel", sinusoidal_embeddings=True)
    # Transformers fills the table at init (make_checkpoint then randomises it, like any
    # weight); a fresh kzoo model's fixed table must be Transformers' one.
    fresh = transformers.XLMModel(transformers.XLMConfig(**TINY_XLM, sinusoidal_embeddings=True))
    want = fresh.position_embeddings.weight.detach().numpy()
    got = np.asarray(SinusoidalPositions()(want.shape))
    np.testing.assert_array_equal(got, want)  # bit for bit
    backbone = spec.backbone_config({**TINY_XLM, "sinusoidal_embeddings": True})
    model = build_model({"architecture": "xlm", "task": "backbone", "backbone": backbone})
    table = model.get_layer("position_embedding")
    assert not table.trainable
    np.testing.assert_array_equal(np.asarray(table.weights[0]), want)


def test_bin_with_tied_copy(tmp_path):
    src = tmp_path / "ref"
    summary, _ = check(tmp_path, "XLMWithLMHeadModel", fmt="bin")
    assert summary["checkpoint_format"] == "bin"
    assert "tied" in summary["report"]
    assert summary["unexpected"] == []
    assert "pred_layer.proj.weight" in torch.load(src / "pytorch_model.bin", weights_only=True)


def test_adaptive_softmax_is_refused(tmp_path):
    src = make_checkpoint(tmp_path / "ref", "XLMWithLMHeadModel", TINY_XLM, asm=True,
                          asm_cutoffs=[10, 50], asm_div_value=2.0)
    with pytest.raises(CheckpointError, match="asm=true") as err:
        convert(src, tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    # The encoder alone converts (and matches); the adaptive-softmax tensors are left over.
    summary = convert(src, tmp_path / "out", task="backbone")
    assert summary["unexpected"] and all(n.startswith("pred_layer.proj.") for n in summary["unexpected"])
    assert verify(tmp_path / "out", src)["ok"]


def test_missing_token_types_and_languages(tmp_path):
    """-1 in segment_ids / lang_ids = Transformers called without token_type_ids / langs."""
    src = make_checkpoint(tmp_path / "ref", "XLMWithLMHeadModel", TINY_XLM)
    convert(src, tmp_path / "out")
    model = load_model(tmp_path / "out")
    ref = transformers.XLMWithLMHeadModel.from_pretrained(src).eval()
    inputs = reference_inputs(99, pad_id=2, left_pad=True, num_languages=2)
    no_types = {**inputs, "segment_ids": np.full_like(inputs["segment_ids"], -1)}
    no_langs = {**inputs, "lang_ids": np.full_like(inputs["lang_ids"], -1)}
    ids = torch.as_tensor(inputs["token_ids"], dtype=torch.long)
    mask = torch.as_tensor(inputs["padding_mask"], dtype=torch.long)
    types = torch.as_tensor(inputs["segment_ids"], dtype=torch.long)
    langs = torch.as_tensor(inputs["lang_ids"], dtype=torch.long)
    with torch.no_grad():
        want_no_types = ref(input_ids=ids, attention_mask=mask, langs=langs).logits.numpy()
        want_no_langs = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
        want_neither = ref(input_ids=ids, attention_mask=mask).logits.numpy()
    neither = {**inputs, "segment_ids": no_types["segment_ids"], "lang_ids": no_langs["lang_ids"]}
    for ours, want in [(no_types, want_no_types), (no_langs, want_no_langs), (neither, want_neither)]:
        assert np.max(np.abs(np.asarray(model(ours)) - want)) <= 1e-4


# --- xlm-clm-enfr-1024: trained causal, configured causal=false ---------------------------

HUB = "tests/data/hf_configs"


def hub_config(name):
    hf = json.loads(open(f"{HUB}/{name}.json").read())
    hf.pop("_kzoo_note", None)  # the hub's own form has no note
    return hf


def test_clm_recognised_by_name(caplog):
    hf = hub_config("xlm-clm-enfr-1024")
    assert spec.backbone_config(hf) == spec.backbone_config(hub_config("xlm-mlm-enfr-1024"))
    snapshot = "/root/.cache/huggingface/hub/models--FacebookAI--xlm-clm-enfr-1024/snapshots/0123abc"
    for source in ("/data/xlm-clm-enfr-1024", snapshot):
        with caplog.at_level(logging.WARNING, logger=spec.__name__):
            caplog.clear()
            config = spec.backbone_config(hf, source=source)
        assert config["trained_causal"] is True and config["causal"] is False
        assert len(caplog.records) == 1 and "causal" in caplog.text and "\n" not in caplog.text.strip()
    assert spec.backbone_config({**hf, "_name_or_path": "FacebookAI/xlm-clm-enfr-1024"})["trained_causal"]
    assert spec.backbone_config({**hf, "trained_causal": True})["trained_causal"]
    # "clm" elsewhere in the path, or inside a word, does not count.
    assert not spec.backbone_config(hf, source="/home/clm/xlm-mlm-enfr-1024")["trained_causal"]
    assert not spec.backbone_config(hf, source="/data/xlm-mlm-enfr-1024-clmx")["trained_causal"]


def test_clm_forward_stays_bidirectional(tmp_path):
    """A clm checkpoint converts with causal=false (parity) and trained_causal=true."""
    src = make_checkpoint(tmp_path / "ref", "XLMWithLMHeadModel", TINY_XLM)
    hf = json.loads((src / "config.json").read_text())  # as Transformers 4 saved it
    (src / "config.json").write_text(json.dumps({**hf, "_name_or_path": "FacebookAI/xlm-clm-enfr-1024"}))
    convert(src, tmp_path / "out")
    backbone = modeldir.read_config(tmp_path / "out")["backbone"]
    assert backbone["causal"] is False and backbone["trained_causal"] is True
    assert verify(tmp_path / "out", src)["ok"]


def test_hf_config_round_trip():
    for name in ("xlm-mlm-enfr-1024", "xlm-mlm-100-1280"):
        backbone = spec.backbone_config(hub_config(name))
        assert spec.backbone_config(spec.hf_config(backbone)) == backbone
    clm = {**spec.backbone_config(hub_config("xlm-clm-enfr-1024")), "trained_causal": True}
    assert spec.backbone_config(spec.hf_config(clm)) == clm


def test_index_spelling_of_special_ids():
    hf = {k: v for k, v in hub_config("xlm-mlm-enfr-1024").items() if not k.endswith("_token_id")}
    old = spec.backbone_config({**hf, "pad_index": 7, "bos_index": 8, "eos_index": 9})
    assert (old["pad_token_id"], old["bos_token_id"], old["eos_token_id"]) == (7, 8, 9)
    assert spec.backbone_config(hf)["pad_token_id"] == 2
