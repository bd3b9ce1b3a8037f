"""fill-mask and embed on XLM (mask token <special1>), with and without a language.

Transformers' fill-mask pipeline never passes `langs`, so kzoo without `lang` is compared with
that pipeline; with `lang` it is compared with XLMWithLMHeadModel called with those `langs`.
"""

import json

import numpy as np
import pytest
import torch
import transformers

import kzoo
from kzoo.cli import main
from kzoo.errors import KzooError, TokenizerError
from kzoo.pipelines import PipelineError
from reference import loaded
from xlm_fixtures import xlm_model_dir

TEXTS = ["Paris is the <special1> of France.", "L'été dernier, j'ai vu <special1> à Paris."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def enfr(tmp_path_factory):
    src, out = xlm_model_dir(tmp_path_factory.mktemp("xlm_enfr"))
    ref = transformers.XLMWithLMHeadModel.from_pretrained(src).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(src))
    return src, out, ref, ref_tok


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_fill_mask(ref, ref_tok, text, top_k, lang_id):
    """Transformers' fill-mask pipeline's output, computed from XLMWithLMHeadModel with `langs`."""
    ids = ref_tok(text)["input_ids"]
    inp = torch.tensor([ids])
    with torch.no_grad():
        logits = ref(input_ids=inp, langs=torch.full_like(inp, lang_id)).logits[0].numpy()
    pos = ids.index(ref_tok.mask_token_id)
    probs = softmax(logits[pos])
    best = np.argsort(-probs, kind="stable")[:top_k]
    rows = []
    for t in best:
        filled = list(ids)
        filled[pos] = int(t)
        rows.append({"score": float(probs[t]), "token": int(t), "token_str": ref_tok.decode([int(t)]),
                     "sequence": ref_tok.decode(filled, skip_special_tokens=True)})
    return rows


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a["token"], a["token_str"], a["sequence"]) == (b["token"], b["token_str"], b["sequence"])
        assert abs(a["score"] - b["score"]) < 1e-4


@pytest.mark.parametrize("text", TEXTS)
def test_fill_mask_without_lang_equals_transformers_pipeline(enfr, text):
    src, out, _, ref_tok = enfr
    assert ref_tok.mask_token == "<special1>"
    ours = kzoo.pipeline("fill-mask", loaded(out))(text, top_k=5)
    theirs = transformers.pipeline("fill-mask", model=str(src), device="cpu")(text, top_k=5)
    assert_same(ours, theirs)


@pytest.mark.parametrize("text", TEXTS)
def test_fill_mask_with_lang_equals_pytorch_with_langs(enfr, text):
    _, out, ref, ref_tok = enfr
    fill = kzoo.pipeline("fill-mask", loaded(out))
    by_lang = {}
    for lang, lang_id in (("en", 0), ("fr", 1)):
        by_lang[lang] = fill(text, top_k=5, lang=lang)
        assert_same(by_lang[lang], reference_fill_mask(ref, ref_tok, text, 5, lang_id))
    # the language embedding changes the prediction
    assert [r["score"] for r in by_lang["en"]] != pytest.approx([r["score"] for r in by_lang["fr"]], abs=1e-3)


def test_model_on_its_tokenizers_batch_equals_transformers(enfr):
    """`model(tokenizer(texts))` means what Transformers' `model(**tokenizer(texts))` means: no
    language ids given (lang_ids -1), so no language embedding added."""
    _, out, ref, ref_tok = enfr
    texts = ["Hello world.", "L'été dernier, j'ai vu <special1> à Paris."]
    batch = kzoo.load_tokenizer(out)(texts)
    assert (batch["lang_ids"] == -1).all()
    ours = np.asarray(kzoo.load(out)(batch, training=False))
    enc = ref_tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = ref(**enc).logits.numpy()
    keep = batch["padding_mask"] == 1
    assert np.abs(ours[keep] - theirs[keep]).max() < 1e-4


def test_fill_mask_cli_lang(enfr, capsys):
    _, out, ref, ref_tok = enfr
    text = TEXTS[0]
    assert main(["fill-mask", str(out), text, "--lang", "fr", "--top-k", "3", "--json"]) == 0
    assert_same(json.loads(capsys.readouterr().out), reference_fill_mask(ref, ref_tok, text, 3, 1))
    assert main(["fill-mask", str(out), text, "--lang", "fr", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "paris is the" in lines[0]


def test_fill_mask_cli_without_mask_names_special1(enfr, capsys):
    assert main(["fill-mask", str(enfr[1]), "no mask here", "--lang", "fr"]) == 2
    err = capsys.readouterr().err
    assert "<special1>" in err and "Traceback" not in err


def test_unknown_language_is_one_line_listing_the_languages(enfr, capsys):
    _, out, _, _ = enfr
    for argv in (["fill-mask", str(out), TEXTS[0], "--lang", "de"], ["embed", str(out), "hello", "--lang", "de"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'de'" in err and "en, fr" in err and "Traceback" not in err
    with pytest.raises(TokenizerError, match="en, fr"):
        kzoo.pipeline("fill-mask", loaded(out))(TEXTS[0], lang="xx")
    assert issubclass(TokenizerError, KzooError)


def test_embed_with_lang_equals_pytorch_hidden_states(enfr, capsys):
    _, out, ref, ref_tok = enfr
    texts = ["Hello world.", "Bonjour le monde, c'est l'été !"]
    features = kzoo.pipeline("features", loaded(out))
    for lang, lang_id in ((None, None), ("fr", 1)):
        ours = features(texts, lang=lang)
        for text, item in zip(texts, ours):
            enc = ref_tok(text, return_tensors="pt")
            langs = None if lang_id is None else torch.full_like(enc["input_ids"], lang_id)
            with torch.no_grad():
                hidden = ref(**enc, langs=langs, output_hidden_states=True).hidden_states[-1][0].numpy()
            assert item["tokens"] == ref_tok.convert_ids_to_tokens(enc["input_ids"][0])
            assert np.max(np.abs(item["sequence_output"] - hidden)) < 1e-4
    assert main(["embed", str(out), *texts, "--lang", "fr", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert np.allclose(printed[1]["sequence_output"], ours[1]["sequence_output"], atol=1e-6)


def test_lang_refused_without_languages(tmp_path, capsys):
    """A monolingual XLM (and ALBERT / XLM-R: no languages in their tokenizers) refuses lang."""
    _, out = xlm_model_dir(tmp_path, languages=None)
    text = "Paris is the <special1> of France."
    assert kzoo.pipeline("fill-mask", out)(text, top_k=2)  # fine without lang
    with pytest.raises(PipelineError, match="no languages"):
        kzoo.pipeline("fill-mask", out)(text, lang="fr")
    capsys.readouterr()
    assert main(["fill-mask", str(out), text, "--lang", "fr"]) == 2
    err = capsys.readouterr().err
    assert "no languages" in err and err.count("\n") == 1


def test_lang_refused_for_albert(tmp_path, capsys):
    import shutil

    from kzoo.converters.convert import convert
    from reference import TINY_ALBERT, make_checkpoint
    from spm_fixtures import make_albert_tokenizer_dir

    tok = make_albert_tokenizer_dir(tmp_path / "tok", with_tokenizer_json=False)
    src = make_checkpoint(tmp_path / "ref", "AlbertForMaskedLM", TINY_ALBERT)
    for f in tok.iterdir():
        shutil.copy(f, src / f.name)
    convert(src, tmp_path / "out")
    capsys.readouterr()
    assert main(["fill-mask", str(tmp_path / "out"), "Hello [MASK].", "--lang", "fr"]) == 2
    err = capsys.readouterr().err
    assert "albert models have no languages" in err and "Traceback" not in err
