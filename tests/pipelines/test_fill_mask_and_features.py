"""fill-mask and embed on converted models, against Transformers' pipelines on the PyTorch reference."""

import json

import numpy as np
import pytest

import kzoo
from kzoo.pipelines import PipelineError
from kzoo.cli import main
from reference import TINY_ALBERT, TINY_XLMR, loaded, model_with_tokenizer
from spm_fixtures import make_albert_tokenizer_dir, make_xlmr_tokenizer_dir


@pytest.fixture(scope="module")
def albert(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("albert")
    tok = make_albert_tokenizer_dir(tmp, with_tokenizer_json=True)
    return model_with_tokenizer(tmp, "AlbertForMaskedLM", TINY_ALBERT, tok)


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xlmr")
    tok = make_xlmr_tokenizer_dir(tmp)
    return model_with_tokenizer(tmp, "XLMRobertaForMaskedLM", TINY_XLMR, tok)


def reference_fill_mask(src, text, top_k):
    import transformers

    return transformers.pipeline("fill-mask", model=str(src), device="cpu")(text, top_k=top_k)


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        if isinstance(a, list):
            assert_same(a, b)
            continue
        assert (a["token"], a["token_str"], a["sequence"]) == (b["token"], b["token_str"], b["sequence"])
        assert abs(a["score"] - b["score"]) < 1e-4


@pytest.mark.parametrize("text,top_k", [
    ("Hello I'm a [MASK] model.", 5),
    ("[MASK] the end", 3),
    ("Two [MASK] in one [MASK] text.", 4),
])
def test_albert_fill_mask_equals_transformers(albert, text, top_k):
    src, out = albert
    ours = kzoo.pipeline("fill-mask", loaded(out))(text, top_k=top_k)
    assert_same(ours, reference_fill_mask(src, text, top_k))


def test_fill_mask_and_features_options_at_construction(albert):
    """Transformers' pipelines take their options at construction or at call; the call's win."""
    src, out = albert
    text = "Hello I'm a [MASK] model."
    assert_same(kzoo.pipeline("fill-mask", loaded(out), top_k=2)(text), reference_fill_mask(src, text, 2))
    assert_same(kzoo.pipeline("fill-mask", loaded(out), top_k=2)(text, top_k=3), reference_fill_mask(src, text, 3))
    long = "word " * 600
    with pytest.raises(PipelineError, match="truncation=True"):
        kzoo.pipeline("features", loaded(out))(long)
    assert kzoo.pipeline("features", loaded(out), truncation=True)(long)["sequence_output"].shape[0] > 0
    with pytest.raises(PipelineError, match="unknown option.*top_p.*top_k, targets"):
        kzoo.pipeline("fill-mask", loaded(out), top_p=0.5)


@pytest.mark.parametrize("text", ["Hello I'm a <mask> model.", "Bonjour, je suis<mask>!", "<mask> and <mask>"])
def test_xlmr_fill_mask_equals_transformers(xlmr, text):
    src, out = xlmr
    ours = kzoo.pipeline("fill-mask", loaded(out))(text, top_k=5)
    assert_same(ours, reference_fill_mask(src, text, 5))


@pytest.mark.parametrize("family", ["albert", "xlmr"])
def test_fill_mask_targets_and_tokenizer_kwargs(albert, xlmr, family):
    """targets: the probabilities of those tokens only (one outside the vocabulary: its first piece, with a
    warning); tokenizer_kwargs for the tokenizer; top_k capped at the number of targets; as Transformers."""
    import transformers

    src, out = {"albert": albert, "xlmr": xlmr}[family]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(src))
    mask = tokenizer.mask_token
    reference = transformers.pipeline("fill-mask", model=str(src), device="cpu")
    pipe = kzoo.pipeline("fill-mask", loaded(out))
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(10, 40, 3)))
    for text, options in ((f"Hello I'm a {mask} model.", dict(targets=vocabulary, top_k=4)),
                          (f"{mask} and {mask}", dict(targets=vocabulary[:2], top_k=5)),
                          (f"Hello {mask}", dict(targets=vocabulary[0])), (f"Hello {mask}", dict(top_k=0)),
                          (f"{mask} and {mask}", dict(top_k=0)),
                          (f"{mask} " + "word " * 50, dict(tokenizer_kwargs={"truncation": True, "max_length": 6}))):
        assert_same(pipe(text, **options), reference(text, **options))
    with pytest.warns(UserWarning, match="does not exist in the model vocabulary"):
        ours = pipe(f"Hello {mask}", targets=["Zqxwords", vocabulary[1]])
    assert_same(ours, reference(f"Hello {mask}", targets=["Zqxwords", vocabulary[1]]))
    with pytest.raises(PipelineError, match="tokenizer_kwargs: kzoo's tokenizers take"):
        pipe(f"Hello {mask}", tokenizer_kwargs={"return_tensors": "np"})
    long = f"{mask} " + "word " * 200  # (truncation alone: at the model's longest input, as Transformers')
    longest = kzoo.runtime.load(out).limits()[1]
    assert pipe(long, tokenizer_kwargs={"truncation": True}) == \
        pipe(long, tokenizer_kwargs={"truncation": True, "max_length": longest})
    streamed = list(pipe(iter([f"Hello {mask}"] * 3), batch_size=2))  # (batch_size: for a stream)
    assert len(streamed) == 3
    for result in streamed:
        assert_same(result, pipe(f"Hello {mask}"))


def test_fill_mask_cli_json(albert, capsys):
    src, out = albert
    assert main(["fill-mask", str(out), "Hello I'm a [MASK] model.", "--top-k", "3", "--json"]) == 0
    assert_same(json.loads(capsys.readouterr().out), reference_fill_mask(src, "Hello I'm a [MASK] model.", 3))


def test_fill_mask_without_mask_is_a_clear_error(albert, capsys):
    assert main(["fill-mask", str(albert[1]), "no mask here"]) == 2
    err = capsys.readouterr().err
    assert "[MASK]" in err and "Traceback" not in err


def test_embed_equals_transformers_hidden_states(albert, capsys):
    import torch
    import transformers

    src, out = albert
    texts = ["Hello world.", "A longer sentence, with commas, 1,000 of them."]
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(src))
    ref = transformers.AlbertForMaskedLM.from_pretrained(str(src)).eval()
    ours = kzoo.pipeline("features", loaded(out))(texts)
    for text, item in zip(texts, ours):
        enc = ref_tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = ref(**enc, output_hidden_states=True).hidden_states[-1][0].numpy()
        assert item["tokens"] == ref_tok.convert_ids_to_tokens(enc["input_ids"][0])
        assert np.max(np.abs(item["sequence_output"] - hidden)) < 1e-4
    assert main(["embed", str(out), *texts, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == 2 and np.allclose(printed[0]["sequence_output"], ours[0]["sequence_output"])


def test_verify_cli_passes(albert, capsys):
    src, out = albert
    capsys.readouterr()
    assert main(["verify", str(out), "--reference", str(src)]) == 0
    printed = capsys.readouterr()
    assert "PASS" in printed.out
    assert "LOAD REPORT" not in printed.out + printed.err and "Loading weights" not in printed.err


def test_xlmr_embed_equals_transformers(xlmr):
    import torch
    import transformers

    src, out = xlmr
    texts = ["Hello world.", "Bonjour <mask> le monde, ça va?", "你好世界"]
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(src))
    ref = transformers.XLMRobertaForMaskedLM.from_pretrained(str(src)).eval()
    for text, item in zip(texts, kzoo.pipeline("features", loaded(out))(texts)):
        enc = ref_tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = ref(**enc, output_hidden_states=True).hidden_states[-1][0].numpy()
        assert item["tokens"] == ref_tok.convert_ids_to_tokens(enc["input_ids"][0])
        assert np.max(np.abs(item["sequence_output"] - hidden)) < 1e-4


def test_xlmr_convert_and_fill_mask_cli(xlmr, tmp_path, capsys):
    src, _ = xlmr
    assert main(["convert", str(src), str(tmp_path / "cli-out")]) == 0
    capsys.readouterr()
    text = "Hello I'm a <mask> model."
    assert main(["fill-mask", str(tmp_path / "cli-out"), text, "--json"]) == 0
    assert_same(json.loads(capsys.readouterr().out), reference_fill_mask(src, text, 5))


def test_long_texts_are_an_error_unless_truncation(albert, capsys):
    """Transformers' pipelines do not cut a text longer than the model takes: a one-line error naming
    both lengths; truncation=True (--truncation) cuts it to the model's longest input."""
    from kzoo.pipelines import PipelineError

    src, out = albert
    long_text = "Hello I'm a [MASK] model. " + "and so on " * 300
    for pipeline, call in (("fill-mask", lambda p, **kw: p(long_text, top_k=2, **kw)),
                           ("features", lambda p, **kw: p([long_text, "short"], **kw))):
        run = kzoo.pipeline(pipeline, loaded(out))
        with pytest.raises(PipelineError, match=r"text 1 is \d+ tokens long; the model takes at most 64"):
            call(run)
        assert call(run, truncation=True)
    items = kzoo.pipeline("features", loaded(out))([long_text, "short"], truncation=True)
    assert len(items[0]["tokens"]) == 64
    assert main(["fill-mask", str(out), long_text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--truncation" in err
    assert main(["fill-mask", str(out), long_text, "--truncation", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5


def test_many_pipelines_in_one_process_are_quiet(albert, caplog):
    """Each runner traces its functions once; TensorFlow's "triggered tf.function retracing" warning
    (it counts every function made from the same code) does not appear."""
    import logging

    caplog.set_level(logging.WARNING)
    src, out = albert
    for n in range(3):
        kzoo.pipeline("fill-mask", out)(f"hello [MASK] number {n}", top_k=1)
        kzoo.pipeline("features", out)(["a", "b c " * n])
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
