"""`kzoo train` as a user runs it (the README's flow: a new head on a pretrained checkpoint, train on a small
JSONL, classify with the result, export it text-in and run that under LiteRT), its files' one-line errors,
and the evaluation metrics against scikit-learn and seqeval's documented examples."""

import json
import shutil

import numpy as np
import pytest

import kzoo
from kzoo.cli import main
from kzoo.pipelines import PipelineError
from kzoo.training import metrics
from reference import TINY_XLMR, model_with_tokenizer
from spm_fixtures import make_xlmr_tokenizer_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [{"text": "great movie , loved it", "label": "pos"}, {"text": "awful , boring film", "label": "neg"},
        {"text": "loved the actors", "label": "pos"}, {"text": "boring and long", "label": "neg"}] * 4


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-cli")
    src, model_dir = model_with_tokenizer(tmp, "XLMRobertaForMaskedLM", TINY_XLMR, make_xlmr_tokenizer_dir(tmp))
    return tmp, src


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_the_readme_flow(pretrained, tmp_path, capsys):
    """convert with a new head -> train -> classify -> export a text-in .tflite -> classify with it."""
    _, src = pretrained
    head = str(tmp_path / "sentiment")
    assert main(["convert", str(src), head, "--task", "classifier", "--labels", "neg,pos"]) == 0
    capsys.readouterr()
    train, evaluation = jsonl(tmp_path / "train.jsonl", ROWS), jsonl(tmp_path / "eval.jsonl", ROWS[:4])
    out = str(tmp_path / "trained")
    assert main(["train", head, out, "--train", train, "--eval", evaluation, "--epochs", "3", "--batch-size", "4",
                 "--learning-rate", "1e-3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total_steps"] == report["steps"] == 12 and report["examples"] == 16
    assert all(np.isfinite(row["loss"]) and row["grad_norm"] > 0 for row in report["log"])
    assert [row["learning_rate"] for row in report["log"]][-1] < 1e-3  # (linear to 0; correctness: test_train.py)
    assert set(report["eval"]) == {"accuracy", "macro_f1"}
    assert main(["classify", out, "loved it", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] in ("neg", "pos")
    tflite = str(tmp_path / "sentiment.tflite")
    assert main(["export", "tflite", out, tflite, "--with-tokenizer", "--json"]) == 0
    capsys.readouterr()
    texts = ["loved it", "boring film"]
    ours = kzoo.pipeline("text-classification", tflite)(texts)
    want = kzoo.pipeline("text-classification", out)(texts)
    assert [r["label"] for r in ours] == [r["label"] for r in want]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(ours, want)) < 1e-4
    assert main(["zero-shot", tflite, "loved it", "--candidate-labels", "a,b"]) == 2  # (pairs: not in its signature)
    assert "takes single texts only" in capsys.readouterr().err
    alone = tmp_path / "alone" / "sentiment.tflite"  # without its sidecar: no labels, so no results named by ids
    alone.parent.mkdir()
    shutil.copyfile(tflite, alone)
    with pytest.raises(PipelineError, match="sentiment.tflite.kzoo is missing.*holds the model's labels"):
        kzoo.pipeline("text-classification", alone, tokenizer=out)
    assert main(["train", head, out, "--train", train]) == 2  # OUT exists
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "label": "pos"}\n{"text": "b", "label": "happy"}\n', ":2: unknown label 'happy'"),
    ('{"text": "a", "label": "pos"}\nnot json\n', ":2: not valid JSON"),
    ('{"label": "pos"}\n', ':1: needs "text"'),
    ('{"text": "a"}\n', ':1: needs "label"'),
    ('{"text": "a", "label": 7}\n', ":1: label 7 is neither"),
    ("\n\n", "no examples"),
    ('{"text": "a", "label": "pos", "text_pair": "b"}\n{"text": "c", "label": "neg"}\n', "some examples have a text_pair"),
])
def test_bad_files_are_one_line_errors(pretrained, tmp_path, capsys, content, message):
    tmp, src = pretrained
    head = tmp / "head"
    if not head.exists():
        assert main(["convert", str(src), str(head), "--task", "classifier", "--labels", "neg,pos"]) == 0
    (tmp_path / "bad.jsonl").write_text(content)
    assert main(["train", str(head), str(tmp_path / "out"), "--train", str(tmp_path / "bad.jsonl")]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.jsonl" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_options_and_models(pretrained, tmp_path, capsys):
    tmp, src = pretrained
    train = jsonl(tmp_path / "t.jsonl", ROWS)
    assert main(["train", str(tmp / "out"), str(tmp_path / "o"), "--train", train]) == 2  # a masked-LM model dir
    assert "trains classifier, token_classifier, question_answering models" in capsys.readouterr().err
    head = tmp / "head"
    if not head.exists():
        assert main(["convert", str(src), str(head), "--task", "classifier", "--labels", "neg,pos"]) == 0
    for flags, word in ((["--batch-size", "0"], "batch-size"), (["--gradient-accumulation", "0"], "gradient-accumulation"),
                        (["--scheduler", "cosine"], "scheduler"), (["--warmup-ratio", "1.5"], "warmup-ratio"),
                        (["--max-length", "0"], "max-length must be"), (["--max-length", "2"], "no room for text")):
        try:
            code = main(["train", str(head), str(tmp_path / "o"), "--train", train, *flags])
        except SystemExit as e:  # (argparse's usage errors)
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and word in err and err.count("\n") == 1, err
    assert main(["train", str(head), str(tmp_path / "o"), "--train", str(tmp_path), "--max-length", "1000"]) == 2
    warning, error = capsys.readouterr().err.splitlines()  # (run_glue's warning where a length is capped)
    assert warning.startswith("kzoo: warning: The max_length passed (1000) is larger than the maximum length")
    assert "a directory, not a data file" in error


def test_conll_token_classification(tmp_path, capsys):
    tok = make_xlmr_tokenizer_dir(tmp_path)
    labels = {0: "O", 1: "B-PER", 2: "I-PER"}
    _, model_dir = model_with_tokenizer(tmp_path, "XLMRobertaForTokenClassification",
                                        {**TINY_XLMR, "id2label": labels, "label2id": {v: k for k, v in labels.items()}}, tok)
    (tmp_path / "train.conll").write_text("-DOCSTART- O\n\nJean B-PER\nPierre I-PER\nlives O\n\nMarie B-PER\nsmiles O\n")
    report = kzoo.train(model_dir, tmp_path / "trained", tmp_path / "train.conll", tmp_path / "train.conll",
                        max_steps=2, batch_size=2)
    assert report["examples"] == 2 and set(report["eval"]) == {"precision", "recall", "f1", "accuracy"}
    (tmp_path / "bad.conll").write_text("Jean B-PER\nPierre\n")
    with pytest.raises(kzoo.training.DataError, match=r"bad.conll:2: expected a token and its tag"):
        kzoo.train(model_dir, tmp_path / "trained2", tmp_path / "bad.conll")


def test_metrics_are_sklearn_and_seqeval():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    predicted, gold = rng.integers(0, 4, 200), rng.integers(0, 3, 200)
    got = metrics.classification(predicted, gold)
    assert got["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert got["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro"))
    # seqeval (an sdist this offline index cannot build): its README's and docstrings' examples, its
    # lenient IOB chunking (an I- after O starts an entity; a type change ends one)
    assert metrics.entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3)}
    assert metrics.entities(["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4)}
    assert metrics.entities(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 2)}
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    got = metrics.token_classification(y_pred, y_true)
    assert (got["precision"], got["recall"], got["f1"]) == (0.5, 0.5, 0.5)


def test_lora_trains_adapters_and_the_head_and_saves_them_merged(pretrained, tmp_path):
    """--lora-rank: Keras' Dense.enable_lora on every attention query and value projection; only those
    adapters and the head train; OUT holds merged kernels (each query / value kernel moved by a matrix of
    rank <= R, every other backbone weight as it was), loads as a plain model dir and exports."""
    from kzoo.export import export_tflite

    tmp, src = pretrained
    head = tmp / "head"
    if not head.exists():
        assert main(["convert", str(src), str(head), "--task", "classifier", "--labels", "neg,pos"]) == 0
    train = jsonl(tmp_path / "train.jsonl", ROWS)
    report = kzoo.train(head, tmp_path / "lora", train, lora_rank=2, max_steps=4, batch_size=4, learning_rate=1e-2)
    assert report["options"]["lora_rank"] == 2
    before = {v.path: np.asarray(v) for v in kzoo.load(head).weights}
    after = {v.path: np.asarray(v) for v in kzoo.load(tmp_path / "lora").weights}
    assert before.keys() == after.keys()  # (no LoRA variables left: merged)
    backbone = {v.path for v in kzoo.load(head).backbone.weights}
    for path in sorted(backbone):
        moved = after[path] - before[path]
        if path.endswith(("query/kernel", "value/kernel")):
            assert 0 < np.linalg.matrix_rank(moved, tol=1e-7) <= 2, path
        else:
            assert not moved.any(), path
    assert any(np.abs(after[p] - before[p]).max() > 0 for p in after if p not in backbone)  # the head trained
    exported = export_tflite(tmp_path / "lora", tmp_path / "lora.tflite")
    assert exported["ok"]
