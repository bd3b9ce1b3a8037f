"""Pipelines on a text-in .tflite (`--with-tokenizer`, the one file a phone needs): fill-mask and
features run the model's own tokenizer and head, and give what they give on the model dir; what
such a file cannot do (more masks or candidates than it was exported with, another task, a
language) is a one-line error naming the export option that would. (Features on a text-in
backbone export: tests/export/test_export.py.)"""

import pytest

import kzoo
from kzoo.cli import main
from kzoo.export import export_tflite
from kzoo.pipelines import PipelineError
from reference import TINY_ALBERT, model_with_tokenizer
from spm_fixtures import make_albert_tokenizer_dir

TEXTS = ["Hello I'm a [MASK] model.", "the [MASK] sat on the [MASK] mat", "[MASK]"]


@pytest.fixture(scope="module")
def albert(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text_in")
    src, model_dir = model_with_tokenizer(tmp, "AlbertForMaskedLM", TINY_ALBERT, make_albert_tokenizer_dir(tmp, True))
    text = tmp / "text.tflite"
    assert export_tflite(model_dir, text, with_tokenizer=True)["ok"]
    small = tmp / "small.tflite"  # 2 candidates, 1 mask, 10 tokens
    export_tflite(model_dir, small, with_tokenizer=True, top_k=2, max_masks=1, max_length=10)
    return src, model_dir, text, small


def test_fill_mask_on_a_text_in_tflite_equals_the_model_dir(albert):
    _, model_dir, text, _ = albert
    want = kzoo.pipeline("fill-mask", model_dir)(TEXTS, top_k=3)
    got = kzoo.pipeline("fill-mask", text)(TEXTS, top_k=3)
    assert len(got) == len(want) == 3
    for ours, theirs in zip(got, want):
        ours, theirs = (ours if isinstance(ours[0], list) else [ours]), (theirs if isinstance(theirs[0], list) else [theirs])
        for a, b in zip(ours, theirs):
            assert [r["token"] for r in a] == [r["token"] for r in b]
            assert [r["sequence"] for r in a] == [r["sequence"] for r in b]
            assert [r["token_str"] for r in a] == [r["token_str"] for r in b]
            assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) <= 1e-5


def test_cli_fill_mask_on_a_text_in_tflite(albert, capsys):
    _, model_dir, text, _ = albert
    assert main(["fill-mask", str(text), TEXTS[0], "--top-k", "2"]) == 0
    got = capsys.readouterr().out
    assert main(["fill-mask", str(model_dir), TEXTS[0], "--top-k", "2"]) == 0
    want = capsys.readouterr().out
    assert [line.split()[1:] for line in got.splitlines()] == [line.split()[1:] for line in want.splitlines()]


def one_line(error, *words):
    text = str(error.value)
    assert "\n" not in text
    for word in words:
        assert word in text, (word, text)


def test_what_the_export_cannot_do_names_the_option(albert):
    _, model_dir, _, small = albert
    fill = kzoo.pipeline("fill-mask", small)
    assert len(fill("a [MASK]", top_k=2)) == 2 and len(fill("a [MASK]", top_k=1)) == 1
    with pytest.raises(PipelineError) as error:
        fill("a [MASK]", top_k=3)
    one_line(error, "top_k=3", "--top-k 3")
    with pytest.raises(PipelineError) as error:
        fill("[MASK] [MASK]")
    one_line(error, "2 masks", "--max-masks 2")
    with pytest.raises(PipelineError) as error:
        fill("[MASK] " + "and more words " * 6)
    one_line(error, "longer than the 10 tokens", "truncation=True")
    assert len(fill("[MASK] " + "and more words " * 6, truncation=True)) == 2  # (the export gives 2)
    with pytest.raises(PipelineError) as error:
        fill(TEXTS[0], lang="en")
    one_line(error, "lang", "no language")
    with pytest.raises(PipelineError) as error:
        kzoo.pipeline("features", small)(TEXTS[0])
    one_line(error, "top_ids", "not the sequence_output features needs")


def test_pipeline_arguments_are_checked(albert):
    _, model_dir, text, _ = albert
    for path in (model_dir, text):
        fill = kzoo.pipeline("fill-mask", path)
        for texts, words in (([], ("empty list",)), (b"a [MASK]", ("bytes",)), (["a [MASK]", 3], ("int",)),
                             (None, ("NoneType",))):
            with pytest.raises(PipelineError) as error:
                fill(texts)
            one_line(error, "expected a str", *words)
        for top_k in (-1, 2.5, "3", True):
            with pytest.raises(PipelineError) as error:
                fill(TEXTS[0], top_k=top_k)
            one_line(error, "top_k", repr(top_k))
    for model in (None, 3, object()):
        with pytest.raises(PipelineError) as error:
            kzoo.pipeline("fill-mask", model)
        one_line(error, "model", "expected a model dir")
