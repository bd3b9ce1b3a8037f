"""kzoo.tokenizers.xlm.XLMTokenizer against Transformers 5.23's XLMTokenizer, id for id.

Tiny XLM tokenizer dirs are built on the fly: a BPE learnt here (fastBPE's `</w>` format, merges.txt
lines "a b count") over a small multilingual corpus, XLM's special tokens at ids 0-13, and the
tokenizer files in the layouts XLM checkpoints come in.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from kzoo.converters import tokenizers
from kzoo.converters.xlm_tokenizer import from_hf_dir as xlm_from_hf_dir
from kzoo.errors import TokenizerError
from kzoo.tokenizers.moses import build_trie, split_on_added_tokens
from kzoo.tokenizers.xlm import MissingExtraError, XLMTokenizer
from bpe_fixtures import SPECIALS, corpus_words, learn_bpe, write_dir

transformers = pytest.importorskip("transformers")
pytest.importorskip("sacremoses")

MULTI_LANGS = ["de", "el", "en", "fr", "ja", "ro", "ru", "th", "zh"]  # a 100-language-like model


def _added(content, id_, special=True, **flags):
    return {"content": content, "lstrip": flags.get("lstrip", False), "normalized": not special,
            "rstrip": flags.get("rstrip", False), "single_word": flags.get("single_word", False),
            "special": special}


def make_dirs(root):
    vocab, merges = learn_bpe(corpus_words(), 700)
    n = len(vocab)
    dirs = {}
    # xlm-mlm-enfr-1024-like: lowercase + accent removal, languages in the tokenizer config
    dirs["enfr"] = write_dir(root / "enfr", vocab, merges, tokenizer_config={
        "do_lowercase_and_remove_accent": True, "lang2id": {"en": 0, "fr": 1}, "id2lang": {"0": "en", "1": "fr"},
        "tokenizer_class": "XLMTokenizer"})
    # xlm-mlm-100-1280-like: cased, accents kept, languages only in the model's config.json
    dirs["multi"] = write_dir(root / "multi", vocab, merges, tokenizer_config={
        "do_lowercase_and_remove_accent": False, "tokenizer_class": "XLMTokenizer"},
        config={"model_type": "xlm", "lang2id": {c: i for i, c in enumerate(MULTI_LANGS)},
                "id2lang": {str(i): c for i, c in enumerate(MULTI_LANGS)}})
    # vocab.json + merges.txt only, merges.txt without a final newline (Transformers drops its last line)
    dirs["bare"] = write_dir(root / "bare", vocab, merges, trailing_newline=False)
    # Transformers-5-saved layout with extra added tokens and flags, left truncation / padding
    decoder = {str(i): _added(t, i) for i, t in enumerate(SPECIALS)}
    decoder[str(n)] = _added("<new>", n, special=False, lstrip=True, rstrip=True)
    decoder[str(n + 1)] = _added("[X]", n + 1, special=False, single_word=True)
    decoder[str(n + 2)] = _added("<special1>x", n + 2, special=False)  # overlaps the mask token
    dirs["custom"] = write_dir(root / "custom", vocab, merges, tokenizer_config={
        "added_tokens_decoder": decoder, "backend": "custom", "bos_token": "<s>", "cls_token": "</s>",
        "do_lowercase_and_remove_accent": True, "extra_special_tokens": SPECIALS[4:],
        "lang2id": {"de": 0, "en": 1}, "id2lang": {"0": "de", "1": "en"}, "mask_token": "<special1>",
        "model_max_length": 12, "pad_token": "<pad>", "sep_token": "</s>", "unk_token": "<unk>",
        "clean_up_tokenization_spaces": True, "truncation_side": "left", "padding_side": "left",
        "tokenizer_class": "XLMTokenizer"})
    # legacy special_tokens_map.json + added_tokens.json, an extra special token not in vocab.json
    dirs["legacy"] = write_dir(root / "legacy", vocab, merges,
                               tokenizer_config={"do_lowercase_and_remove_accent": False, "lang2id": {"en": 0}},
                               special_tokens_map={"mask_token": "<special1>", "additional_special_tokens":
                                                   SPECIALS[4:] + ["<extra>"]},
                               added_tokens={"<brand>": n})
    # split_special_tokens: special tokens in the text are plain text
    dirs["split"] = write_dir(root / "split", vocab, merges, tokenizer_config={
        "do_lowercase_and_remove_accent": True, "lang2id": {"en": 0, "fr": 1}, "split_special_tokens": True})
    return dirs


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return make_dirs(tmp_path_factory.mktemp("xlm_tok"))


_CACHE = {}


def get(dirs, name, tmp_root=None):
    """(Transformers tokenizer, ours from the HF dir, ours re-loaded from a kzoo model dir)."""
    if name not in _CACHE:
        src = dirs[name]
        hf = transformers.XLMTokenizer.from_pretrained(str(src))
        ours = xlm_from_hf_dir(src)
        out = src.parent / f"{name}_kzoo"
        ours.save(out)
        _CACHE[name] = (hf, ours, XLMTokenizer.load(out))
    return _CACHE[name]


DIR_NAMES = ["enfr", "multi", "bare", "custom", "legacy", "split"]

TEXTS = [
    # English / French / German / Russian / Greek / Romanian
    "Hello, World! It's a test: don't stop... (really)?",
    "The quick brown fox jumps over the lazy dog.",
    "L'été dernier, j'ai vu «Le Petit Prince» à Paris… C'était très beau !",
    "Qu'est-ce que c'est ? Ça coûte 12,50 € ; «  bien  » .",
    "Größe, Straße und Übermut: Äpfel für Müller's Café „schön“ – ok",
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Καλημέρα κόσμε! Ελληνικά: άλφα, βήτα; Ωραία «λέξη».",
    "Şi ţara în care mâncăm pâine, învăţăm și știm Ștefan — țară. ĂÂÎŞŢ",
    # punctuation of every kind
    "“Smart quotes” ‘single’ „low“ ‹angle› «guillemets» – en — em ― bar … ellipsis",
    "Fullwidth：（１２３）！？，。、【x】《y》「z」～％．end",
    "\"double\" 'single' `back` ''two'' ``tex`` -- dash --- triple",
    "a.b,c;d:e!f?g(h)[i]{j}<k>|l/m\\n@o#p$q%r^s&t*u+v=w~x_y",
    "Tabs\tand\nnewlines\r\nand\u00a0nbsp\u200bzero\u200dwidth\ufeffbom\x07bell\u2028sep\u0085nel",
    "\x00\x01abc\x7f def\u00ad ghi\u202e jkl",
    "  leading and trailing spaces   ",
    # numbers
    "In 2024, 3.5% of 1,234,567.89 people paid $12.00 — 1/2 or 10-20 km/h; +44 (0) 20 7946 0958.",
    "No. 5 vs. no.5, Mr. Smith and Dr. Who at 10:30 a.m. on 01.02.2003",
    # mixed case and accents
    "ÀÉÎÕÜ àéîõü ÇçÑñ İstanbul ǅemal ﬁne ﬂow Å ångström naïve coöperate résumé",
    "MiXeD CaSe WORDS and ALLCAPS, camelCase, snake_case, kebab-case",
    # mask / special tokens in text
    "Paris is the <special1> of France.",
    "<s>already</s> <pad> <unk> <special0><special9>x<special1>",
    "no<special1>space <special1>x and <special1> x",
    "<special10> <Special1> < special1 > <special1",
    "a <new> b <new>c [X] d[X]e [X]",
    "<extra> and <brand> and <extra><brand>",
    # scripts without a Moses tokenizer of their own, emoji, Hangul, long words
    "中文测试，日本語のテキスト。ภาษาไทย",
    "I ❤️ 🤗 tokenizers 👍🏽 and 한국어 텍스트",
    "a" * 120 + " " + "xyz" * 30,
    # empty-ish
    "",
    " ",
    "\t\n",
    ".",
]


# --------------------------------------------------------------------------------------------
# ids
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DIR_NAMES)
@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_ids_equal_transformers(dirs, name, text):
    hf, ours, loaded = get(dirs, name)
    want = hf(text)["input_ids"]
    assert ours.encode(text) == want
    assert loaded.encode(text) == want
    assert loaded.encode(text, add_special_tokens=False) == hf(text, add_special_tokens=False)["input_ids"]
    assert loaded.tokenize(text) == hf.tokenize(text)


@pytest.mark.parametrize("name", ["enfr", "multi"])
def test_lang_does_not_change_ids_in_transformers(dirs, name):
    """Transformers 5.23 drops `lang` (tokenize() calls _tokenize(text) without it): all texts get "en" rules."""
    hf, _, ours = get(dirs, name)
    for text in TEXTS[:8]:
        want = hf(text)["input_ids"]
        for lang in ours.languages:
            assert hf(text, lang=lang)["input_ids"] == want
            assert ours.encode(text, lang=lang) == want


LANG_TEXTS = {
    "en": [TEXTS[0], TEXTS[15], TEXTS[16]],
    "fr": [TEXTS[2], TEXTS[3], "L'homme qu'il a vu, c'est-à-dire « lui »."],
    "de": [TEXTS[4], "Das ist's! Geht's? Nr. 5, z. B. 3.000,50 Euro."],
    "ru": [TEXTS[5], "Москва — столица России. «Кавычки» и т. д."],
    "el": [TEXTS[6]],
    "ro": [TEXTS[7], "Bună ziua! România este o ţară frumoasă. Şcoala ŞI Ţara.", "ÂÎĂ âîă ȘȚșț"],
}


@pytest.mark.parametrize("name", ["enfr", "multi"])
@pytest.mark.parametrize("lang", sorted(LANG_TEXTS))
def test_pretokenize_by_lang_equals_transformers_tokenize_with_lang(dirs, name, lang):
    """With pretokenize_by_lang, ids equal Transformers' `_tokenize(text, lang=lang)` (XLM's preprocessing)."""
    hf = transformers.XLMTokenizer.from_pretrained(str(dirs[name]))
    hf._tokenize = functools.partial(type(hf)._tokenize, hf, lang=lang)
    ours = xlm_from_hf_dir(dirs[name], pretokenize_by_lang=True)
    use = lang if lang in ours.languages else None
    if use is None and lang != "en":
        ours = xlm_from_hf_dir(dirs["bare"], pretokenize_by_lang=True)  # a model without languages
        hf = transformers.XLMTokenizer.from_pretrained(str(dirs["bare"]))
        hf._tokenize = functools.partial(type(hf)._tokenize, hf, lang=lang)
        use = lang
    for text in LANG_TEXTS[lang] + TEXTS[8:14] + TEXTS[19:22]:
        assert ours.encode(text, lang=use) == hf(text)["input_ids"], text


def test_romanian_preprocessing_only_with_pretokenize_by_lang(dirs):
    text = "Şi ţara învăţăm"
    plain = xlm_from_hf_dir(dirs["multi"])
    by_lang = xlm_from_hf_dir(dirs["multi"], pretokenize_by_lang=True)
    assert plain.tokenize(text, lang="ro") == plain.tokenize(text, lang="en")
    assert by_lang.tokenize(text, lang="ro") != by_lang.tokenize(text, lang="en")
    assert "".join(by_lang.tokenize(text, lang="ro")).replace("</w>", " ").strip() == "Si tara invatam"


PAIRS = [
    ("Hello, world!", "Bonjour le monde !"),
    ("The quick brown fox jumps over the lazy dog.", "Le renard."),
    ("a", "Der schnelle braune Fuchs springt über den faulen Hund."),
    ("", "Привет"),
    ("Καλημέρα", ""),
    ("", ""),
    ("Paris is the <special1> of France.", "<special1> est la capitale."),
]


@pytest.mark.parametrize("name", DIR_NAMES)
def test_pairs_and_truncation(dirs, name):
    hf, _, ours = get(dirs, name)
    for a, b in PAIRS:
        assert ours.encode(a, b) == hf(a, b)["input_ids"]
        assert ours.encode(a, b, add_special_tokens=False) == hf(a, b, add_special_tokens=False)["input_ids"]
        for max_length in (0, 1, 2, 3, 4, 5, 7, 8, 13, 100):
            for truncation in (True, False):
                for add in (True, False):
                    kw = dict(max_length=max_length, truncation=truncation, add_special_tokens=add)
                    assert ours.encode(a, b, **kw) == hf(a, b, **kw)["input_ids"], (a, b, kw)
                    assert ours.encode(a, **kw) == hf(a, **kw)["input_ids"], (a, kw)
    for a, b in PAIRS:  # one text gives way; Transformers' slow tokenizer also cuts from the given side
        for max_length in (4, 8, 13):
            for strategy in ("only_first", "only_second"):
                kw = dict(max_length=max_length, truncation=strategy)
                try:
                    want = hf(a, b, **kw)["input_ids"]
                except Exception:
                    continue
                assert ours.encode(a, b, **kw) == want, (a, b, kw)
    # truncation=True without max_length: model_max_length from the tokenizer config (12 in "custom")
    long = TEXTS[1] + " " + TEXTS[0]
    assert ours.encode(long, truncation=True) == hf(long, truncation=True)["input_ids"]
    assert ours.encode(long, long, truncation=True) == hf(long, long, truncation=True)["input_ids"]


@pytest.mark.parametrize("name", DIR_NAMES)
def test_batch_padding_segments_and_lang_ids(dirs, name):
    hf, _, ours = get(dirs, name)
    texts = [t for t in TEXTS[:6]] + ["", "<special1>"]
    pairs = [b for _, b in PAIRS] + ["x"]
    cases = [dict(), dict(max_length=9), dict(max_length=9, padding="max_length", truncation=True),
             dict(max_length=60, padding="max_length"), dict(truncation=False), dict(truncation=True)]
    for kw in cases:
        for with_pairs in (False, True):
            # (Transformers' truncation=None cuts to max_length when no padding is asked for)
            implied = kw.get("max_length") is not None and "padding" not in kw
            hf_kw = dict(padding=kw.get("padding", "longest"), truncation=kw.get("truncation", implied),
                         max_length=kw.get("max_length"), return_token_type_ids=True)
            want = hf(texts, pairs if with_pairs else None, **hf_kw)
            got = ours(texts, pairs if with_pairs else None, **kw)
            assert set(got) == {"token_ids", "padding_mask", "segment_ids", "lang_ids"}
            assert all(v.dtype == np.int32 for v in got.values())
            assert got["token_ids"].tolist() == want["input_ids"], kw
            assert got["padding_mask"].tolist() == want["attention_mask"], kw
            assert (got["segment_ids"] == -1).all()  # XLM's token types are never fed (see __call__)
            assert (got["lang_ids"] == -1).all()  # no lang: none given, as Transformers' tokenizer
    assert ours([])["token_ids"].shape == (0, 0)
    single = ours("Hello")
    assert single["token_ids"].tolist() == [hf("Hello")["input_ids"]]


def test_lang_ids(dirs):
    _, _, ours = get(dirs, "multi")
    en, fr = MULTI_LANGS.index("en"), MULTI_LANGS.index("fr")
    assert ours.languages == MULTI_LANGS
    out = ours(["Hello", "Hello world again"], lang="fr")
    assert (out["lang_ids"] == fr).all()
    assert (ours(["Hello"])["lang_ids"] == -1).all()  # no lang: none given (-1), as Transformers' tokenizer
    # a (text, pair) language pair, as XLM's translation-LM inputs: the pair part gets the second one
    out = ours(["Hello world"], ["Bonjour le monde"], lang=("en", "fr"))
    first = len(ours.encode("Hello world"))  # <s> A </s>, then B </s>
    assert (out["lang_ids"][0][first:] == fr).all() and (out["lang_ids"][0][:first] == en).all()
    assert ours.encode("Hello", "Bonjour", lang=("en", "fr")) == ours.encode("Hello", "Bonjour")
    _, _, bare = get(dirs, "bare")
    assert bare.languages == [] and (bare(["Hello"])["lang_ids"] == -1).all()


# --------------------------------------------------------------------------------------------
# decode, vocabulary, special tokens
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DIR_NAMES)
def test_decode_and_tokens(dirs, name):
    hf, _, ours = get(dirs, name)
    rng = random.Random(0)
    id_lists = [hf(t)["input_ids"] for t in TEXTS]
    id_lists += [[rng.randrange(-3, len(hf) + 5) for _ in range(30)] for _ in range(20)]
    for ids in id_lists:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
            assert ours.decode(np.asarray(ids, np.int32), skip) == hf.decode(ids, skip_special_tokens=skip)
        assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    for i in (0, 5, 20, len(hf) + 3):
        assert ours.decode(i) == hf.decode(i)
        assert ours.decode(i, skip_special_tokens=True) == hf.decode(i, skip_special_tokens=True)
        assert ours.convert_ids_to_tokens(i) == hf.convert_ids_to_tokens(i)
    assert ours.decode([id_lists[0], id_lists[1][:4]]) == [hf.decode(id_lists[0]), hf.decode(id_lists[1][:4])]


@pytest.mark.parametrize("name", DIR_NAMES)
def test_special_tokens_and_vocab(dirs, name):
    hf, ours_hf, ours = get(dirs, name)
    for tok in (ours_hf, ours):
        assert tok.vocab_size == len(hf)
        assert tok.pad_token_id == hf.pad_token_id == 2
        assert tok.unk_token_id == hf.unk_token_id == 3
        assert tok.cls_token_id == hf.bos_token_id == 0  # the sequence's first token, <s>
        assert tok.sep_token_id == hf.sep_token_id == 1
        assert tok.mask_token == hf.mask_token == "<special1>"
        assert tok.mask_token_id == hf.mask_token_id == 5
        assert tok.all_special_ids == hf.all_special_ids
        assert tok.all_special_tokens == hf.all_special_tokens
        assert tok.convert_tokens_to_ids(["<special1>", "hello</w>", "nope"]) == hf.convert_tokens_to_ids(
            ["<special1>", "hello</w>", "nope"])


def test_legacy_extra_special_token_is_appended(dirs):
    hf, _, ours = get(dirs, "legacy")
    extra_id = hf.convert_tokens_to_ids("<extra>")
    assert extra_id == ours.convert_tokens_to_ids("<extra>") == len(hf) - 1
    assert ours.encode("a <extra> b") == hf("a <extra> b")["input_ids"]


def test_added_token_split_matches_transformers_trie():
    from transformers.tokenization_python import Trie

    rng = random.Random(1)
    token_sets = [["ab", "abc", "bcd", "c"], ["<s>", "</s>", "<special1>", "<special1>x", "s>"],
                  ["aa", "aaa", "b", "ba"], ["xyz"]]
    for tokens in token_sets:
        trie = Trie()
        for t in tokens:
            trie.add(t)
        ours = build_trie(tokens)
        alphabet = sorted(set("".join(tokens))) + [" ", "q"]
        for _ in range(1000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))
            assert split_on_added_tokens(text, ours) == trie.split(text), (tokens, text)


# --------------------------------------------------------------------------------------------
# model dir, languages, errors, extras
# --------------------------------------------------------------------------------------------


def test_save_writes_tokenizer_files_and_keeps_config(dirs, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text('{"format": "kzoo"}')
    xlm_from_hf_dir(dirs["multi"]).save(out)  # the source dir has a config.json too
    assert (out / "config.json").read_text() == '{"format": "kzoo"}'
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "kzoo_tokenizer.json"} <= set(os.listdir(out))
    meta = json.loads((out / "kzoo_tokenizer.json").read_text())
    assert meta["format"] == "kzoo-xlm-bpe" and meta["languages"] == MULTI_LANGS
    assert meta["do_lowercase_and_remove_accent"] is False
    # Transformers loads the kzoo dir as well, with the same ids
    hf = transformers.XLMTokenizer.from_pretrained(str(out))
    assert XLMTokenizer.load(out).encode(TEXTS[2]) == hf(TEXTS[2])["input_ids"]
    # save into the dir it was loaded from
    XLMTokenizer.load(out).save(out)
    assert XLMTokenizer.load(out).encode(TEXTS[0]) == hf(TEXTS[0])["input_ids"]


def test_load_needs_no_transformers_or_torch(dirs, tmp_path):
    out = tmp_path / "model"
    xlm_from_hf_dir(dirs["enfr"]).save(out)
    want = get(dirs, "enfr")[0](TEXTS[2])["input_ids"]
    code = (
        "import sys; sys.modules['transformers'] = None; sys.modules['torch'] = None\n"
        "from kzoo.tokenizers.xlm import XLMTokenizer\n"
        f"print(XLMTokenizer.load({str(out)!r}).encode({TEXTS[2]!r}))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == want


def test_language_errors(dirs, tmp_path):
    _, _, ours = get(dirs, "enfr")
    assert ours.languages == ["en", "fr"]
    with pytest.raises(TokenizerError, match="unknown language 'de'.*en, fr"):
        ours.encode("Hallo", lang="de")
    with pytest.raises(TokenizerError, match="en, fr"):
        ours(["Hallo"], lang="xx")
    vocab, merges = learn_bpe(["a", "b"], 1)
    no_en = write_dir(tmp_path / "defr", vocab, merges, tokenizer_config={"lang2id": {"de": 0, "fr": 1}})
    tok = xlm_from_hf_dir(no_en)
    with pytest.raises(TokenizerError, match="no 'en'.*de, fr"):
        tok.encode("a")
    assert tok.encode("a", lang="fr") == transformers.XLMTokenizer.from_pretrained(str(no_en))("a")["input_ids"]
    assert tok.lang_id("fr") == 1


def test_no_offsets_as_transformers_python_tokenizer(dirs):
    """Transformers' XLMTokenizer is a Python tokenizer: it returns no offset_mapping (silently); kzoo's
    says so."""
    hf, ours, _ = get(dirs, "enfr")
    assert "offset_mapping" not in hf(TEXTS[0], return_offsets_mapping=True)
    with pytest.raises(TokenizerError, match="no character offsets"):
        ours(TEXTS[0], return_offsets_mapping=True)


def test_file_errors(dirs, tmp_path):
    with pytest.raises(TokenizerError, match="merges.txt missing"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "vocab.json").write_text("{}")
        xlm_from_hf_dir(tmp_path / "x")
    with pytest.raises(TokenizerError, match="spiece.model"):  # an XLM dir read as another family's
        tokenizers.from_hf_dir(dirs["enfr"], "albert")
    with pytest.raises(TokenizerError, match="kzoo_tokenizer.json is missing"):
        XLMTokenizer.load(dirs["enfr"])
    with pytest.raises(TokenizerError, match="padding"):
        get(dirs, "enfr")[2](["a"], padding="max_length")


@pytest.mark.parametrize("lang, module, extra", [("zh", "rjieba", "kzoo[xlm-zh]"),
                                                 ("th", "pythainlp", "kzoo[xlm-th]"),
                                                 ("ja", "Mykytea", "kzoo[xlm-ja]")])
def test_missing_extra_names_the_pip_extra(dirs, monkeypatch, lang, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` fails even where it is installed
    if module == "pythainlp":
        monkeypatch.setitem(sys.modules, "pythainlp.tokenize", None)
    tok = xlm_from_hf_dir(dirs["multi"], pretokenize_by_lang=True)
    with pytest.raises(MissingExtraError, match=re.escape(f"pip install '{extra}'")) as err:
        tok.encode("text", lang=lang)
    assert isinstance(err.value, ImportError) and isinstance(err.value, TokenizerError)
    # Transformers' default (no per-language pre-tokenisation) needs no extra
    hf, _, plain = get(dirs, "multi")
    assert plain.encode(TEXTS[25], lang=lang) == hf(TEXTS[25])["input_ids"]


def test_merges_without_final_newline_lose_their_last_line_as_in_transformers(tmp_path):
    vocab, merges = learn_bpe(corpus_words(), 300)
    a, b, _ = merges[-1]
    word = (a + b).replace("</w>", "")
    cfg = {"do_lowercase_and_remove_accent": False}
    results = []
    for newline in (True, False):
        d = write_dir(tmp_path / str(newline), vocab, merges, tokenizer_config=cfg, trailing_newline=newline)
        hf = transformers.XLMTokenizer.from_pretrained(str(d))
        assert xlm_from_hf_dir(d).tokenize(word) == hf.tokenize(word)
        results.append(hf.tokenize(word))
    assert results[0] != results[1]


def _fake_segmenters(monkeypatch):
    """Stand-ins for rjieba / pythainlp / Mykytea (not installed here), for Transformers and kzoo alike."""
    import types

    chunks = lambda text: re.findall(r"\s+|\S{1,2}", text)  # noqa: E731 - whitespace kept, as pythainlp does
    rjieba = types.ModuleType("rjieba")
    rjieba.cut = chunks
    thai = types.ModuleType("pythainlp")
    thai_tokenize = types.ModuleType("pythainlp.tokenize")
    thai.word_tokenize = thai_tokenize.word_tokenize = chunks
    thai.tokenize = thai_tokenize
    kytea = types.ModuleType("Mykytea")
    kytea.Mykytea = lambda options: types.SimpleNamespace(getWS=chunks)
    for name, module in (("rjieba", rjieba), ("pythainlp", thai), ("pythainlp.tokenize", thai_tokenize),
                         ("Mykytea", kytea)):
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("name", ["multi", "bare"])
@pytest.mark.parametrize("lang", ["zh", "th", "ja"])
def test_segmenter_languages_follow_transformers_steps(dirs, monkeypatch, name, lang):
    """Chinese: segment, then Moses' normalisation; Thai / Japanese: normalisation, then segment."""
    _fake_segmenters(monkeypatch)
    hf = transformers.XLMTokenizer.from_pretrained(str(dirs[name]))
    hf._tokenize = functools.partial(type(hf)._tokenize, hf, lang=lang)
    ours = xlm_from_hf_dir(dirs[name], pretokenize_by_lang=True)
    for text in TEXTS[25:27] + TEXTS[8:13] + ["Ünïcode  ＡＢＣ， ｘ。 y", ""]:
        assert ours.encode(text, lang=lang) == hf(text)["input_ids"], text
