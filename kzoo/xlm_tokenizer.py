"""XLM's tokenizer (Moses + BPE) giving Transformers 5.23's `XLMTokenizer` ids, without Transformers.

XLM was trained on text run through the Moses scripts (punctuation normalisation, tokenisation) and
fastBPE. Transformers reproduces that in Python with `sacremoses` (a faithful Python port of the Moses
Perl scripts); we call the same `sacremoses` classes with the same arguments, so every quirk of those
scripts is shared rather than re-implemented. It is the one runtime dependency beyond numpy.

The pipeline, step for step Transformers' (`tokenization_xlm.py` + `tokenization_python.py`):

  1. added / special tokens (`<s>`, `</s>`, `<pad>`, `<unk>`, `<special0>`..`<special9>`; the mask
     token is `<special1>`) are cut out of the raw text (Transformers' trie scan) and kept whole;
     their lstrip / rstrip / single_word flags are honoured as Transformers does;
  2. each remaining piece is pre-tokenised: unicode punctuation replacement (Moses'
     replace-unicode-punctuation.perl), `MosesPunctNormalizer(lang).normalize`, removal of Unicode
     category C characters (tabs and newlines included), [Romanian normalisation for `ro`],
     `MosesTokenizer(lang).tokenize(escape=False)`; Chinese (rjieba), Thai (pythainlp) and
     Japanese (KyTea) use their own word segmenters instead (optional extras);
  3. lowercase + NFD + drop combining marks, when `do_lowercase_and_remove_accent`;
  4. BPE with `</w>` ending each word, merges ranked by their line in merges.txt; ids from vocab.json,
     unknown pieces -> `<unk>`;
  5. `<s> A </s>` or `<s> A </s> B </s>` (segment ids 0 for `<s> A </s>`, 1 for `B </s>`), Transformers'
     slow-tokenizer "longest_first" truncation, padding with `<pad>`.
  Decoding joins the tokens and turns `</w>` into spaces (XLM cannot restore Moses' splits).

Languages. Transformers 5.23 never passes a language to step 2: `PreTrainedTokenizer.tokenize`
calls `self._tokenize(text)` without keyword arguments, so `tokenizer(text, lang="fr")` silently
drops `lang` and every text is pre-tokenised with the English Moses rules (no Romanian step, no
Chinese / Thai / Japanese segmenter). That is what `XLMTokenizer` here does by default, so its ids
equal Transformers'. `lang` then only selects the language ids (`lang_ids`, XLM's `langs` input).
With `pretokenize_by_lang=True`, step 2 uses the given language as XLM's original preprocessing
did, equal to Transformers' `_tokenize(text, lang=lang)`; only then are the extras needed.
The default language is "en" (Transformers' own default for Moses and the language every
multilingual XLM checkpoint has); a model without "en" needs an explicit `lang`.

Files in a kzoo model dir: copies of the Transformers tokenizer files (vocab.json, merges.txt,
tokenizer_config.json, special_tokens_map.json / added_tokens.json when present, so Transformers can
load the dir too) and kzoo_tokenizer.json (the resolved settings: special and added tokens, languages,
flags). `load` needs neither Transformers nor torch.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np

from kzoo.errors import TokenizerError

META_FILE = "kzoo_tokenizer.json"
FORMAT = "kzoo-xlm-bpe"
FORMAT_VERSION = 1
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
# Transformers tokenizer files copied into a kzoo model dir (config.json is never touched).
HF_FILES = (VOCAB_FILE, MERGES_FILE, "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")

# Transformers' XLMTokenizer defaults and special-token attribute order (the order of all_special_ids).
_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_DEFAULT_SPECIALS = {"unk_token": "<unk>", "bos_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
                     "cls_token": "</s>", "mask_token": "<special1>"}
_DEFAULT_EXTRA_SPECIALS = [f"<special{i}>" for i in range(10)]
_LARGE_INTEGER = int(1e20)  # Transformers: a model_max_length above this means "none"
# What kzoo_tokenizer.json keeps (besides added tokens and file names); see `_resolve_hf_dir`.
_SETTINGS = ("do_lowercase_and_remove_accent", "special_tokens", "all_special_tokens", "languages", "lang2id",
             "split_special_tokens", "clean_up_tokenization_spaces", "model_max_length", "padding_side",
             "truncation_side")

# Languages with their own word segmenter: module, pip extra, package.
_EXTRAS = {"zh": ("rjieba", "kzoo[xlm-zh]", "rjieba"),
           "th": ("pythainlp.tokenize", "kzoo[xlm-th]", "pythainlp"),
           "ja": ("Mykytea", "kzoo[xlm-ja]", "kytea")}
# Transformers hard-codes where the KyTea model lives.
KYTEA_MODEL = os.path.join(os.path.expanduser("~"), "local", "share", "kytea", "model.bin")



class MissingExtraError(TokenizerError, ImportError):
    """A language needs an optional package (its pip extra is named in the message)."""


# --------------------------------------------------------------------------------------------
# 1. Transformers' text functions (tokenization_xlm.py, unchanged in behaviour)
# --------------------------------------------------------------------------------------------

_UNICODE_PUNCT = (  # Moses' replace-unicode-punctuation.perl, in Transformers' order
    ("，", ","), (re.compile(r"。\s*"), ". "), ("、", ","), ("”", '"'), ("“", '"'), ("∶", ":"),
    ("：", ":"), ("？", "?"), ("《", '"'), ("》", '"'), ("）", ")"), ("！", "!"), ("（", "("),
    ("；", ";"), ("１", "1"), ("」", '"'), ("「", '"'), ("０", "0"), ("３", "3"), ("２", "2"),
    ("５", "5"), ("６", "6"), ("９", "9"), ("７", "7"), ("８", "8"), ("４", "4"),
    (re.compile(r"．\s*"), ". "), ("～", "~"), ("’", "'"), ("…", "..."), ("━", "-"), ("〈", "<"),
    ("〉", ">"), ("【", "["), ("】", "]"), ("％", "%"),
)


def replace_unicode_punct(text: str) -> str:
    for old, new in _UNICODE_PUNCT:
        text = old.sub(new, text) if isinstance(old, re.Pattern) else text.replace(old, new)
    return text


def remove_non_printing_char(text: str) -> str:
    """Moses' remove-non-printing-char.perl: drops every Unicode category C character."""
    return "".join(c for c in text if not unicodedata.category(c).startswith("C"))


def romanian_preprocessing(text: str) -> str:
    """Sennrich's WMT16 normalise-romanian.py + remove-diacritics.py (XLM en-ro)."""
    text = text.replace("\u015e", "\u0218").replace("\u015f", "\u0219")
    text = text.replace("\u0162", "\u021a").replace("\u0163", "\u021b")
    text = text.replace("\u0218", "S").replace("\u0219", "s")
    text = text.replace("\u021a", "T").replace("\u021b", "t")
    text = text.replace("\u0102", "A").replace("\u0103", "a")
    text = text.replace("\u00c2", "A").replace("\u00e2", "a")
    return text.replace("\u00ce", "I").replace("\u00ee", "i")


def lowercase_and_remove_accent(words: list) -> list:
    """XLM's tools/lowercase_and_remove_accent.py on a list of words (NFD is not recomposed)."""
    text = unicodedata.normalize("NFD", " ".join(words).lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn").lower().split(" ")


def _pairs(word: tuple) -> set:
    return set(zip(word, word[1:]))


# --------------------------------------------------------------------------------------------
# 2. Cutting added tokens out of the text (Transformers' Trie)
# --------------------------------------------------------------------------------------------


def build_trie(contents) -> dict:
    """Character trie of the added tokens ("" marks a token's end), as Transformers' `Trie.add`."""
    root = {}
    for content in contents:
        if content:
            node = root
            for char in content:
                node = node.setdefault(char, {})
            node[""] = 1
    return root


def split_on_added_tokens(text: str, trie: dict) -> list:
    """`text` cut at added tokens: Transformers' `Trie.split`, step for step.

    Its greedy scan with look-ahead is kept as it is (not a regex): with overlapping tokens it can cut
    a piece that is no token at all (tokens "ab", "bcd", "c" cut " bbccd" as " b", "bccd"), and equal
    ids need the same pieces.
    """
    states = {}  # start offset -> trie node of a partial match (insertion ordered)
    offsets = [0]
    skip = 0
    for current, char in enumerate(text):
        if skip and current < skip:
            continue
        to_remove = set()
        reset = False
        for start, node in states.items():
            if "" in node:  # a match ends here: look ahead for the longest one from the earliest start
                for lookstart, looknode in states.items():
                    if lookstart > start:
                        break
                    if lookstart < start:
                        lookahead = end = current + 1
                    else:
                        lookahead = end = current
                    next_char = text[lookahead] if lookahead < len(text) else None
                    if "" in looknode:
                        start, end, skip = lookstart, lookahead, lookahead
                    while next_char in looknode:
                        looknode = looknode[next_char]
                        lookahead += 1
                        if "" in looknode:
                            start, end, skip = lookstart, lookahead, lookahead
                        if lookahead == len(text):
                            break
                        next_char = text[lookahead]
                offsets += [start, end]
                reset = True
                break
            if char in node:
                states[start] = node[char]
            else:
                to_remove.add(start)
        if reset:
            states = {}
        else:
            for start in to_remove:
                del states[start]
        if current >= skip and char in trie:
            states[current] = trie[char]
    for start, node in states.items():  # a match running to the end of the text
        if "" in node:
            offsets += [start, len(text)]
            break
    pieces, start = [], 0
    for end in offsets + [len(text)]:
        if start < end:
            pieces.append(text[start:end])
            start = end
    return pieces


# --------------------------------------------------------------------------------------------
# 3. Reading a Transformers tokenizer dir (what `XLMTokenizer.from_pretrained` resolves)
# --------------------------------------------------------------------------------------------


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None


def _content(token) -> str:
    return token["content"] if isinstance(token, dict) else str(token)


def _added_token(content, id_, special, lstrip=False, rstrip=False, single_word=False, **_):
    return {"content": content, "id": int(id_), "special": bool(special), "lstrip": bool(lstrip),
            "rstrip": bool(rstrip), "single_word": bool(single_word)}


def _lang_table(config: dict) -> dict:
    """{code: language id} from a config's lang2id (preferred) or id2lang."""
    if config.get("lang2id"):
        return {code: int(i) for code, i in config["lang2id"].items()}
    return {code: int(i) for i, code in (config.get("id2lang") or {}).items()}


def _resolve_hf_dir(src: Path) -> dict:
    """Settings of the Transformers tokenizer in `src`, resolved as Transformers 5.23 resolves them."""
    if not (src / VOCAB_FILE).is_file() or not (src / MERGES_FILE).is_file():
        missing = [f for f in (VOCAB_FILE, MERGES_FILE) if not (src / f).is_file()]
        raise TokenizerError(f"{src}: not an XLM tokenizer dir ({', '.join(missing)} missing)")
    config = _read_json(src / "tokenizer_config.json") or {}
    if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
        config["extra_special_tokens"] = config.pop("additional_special_tokens")

    # Special tokens named in the files (`*_token` entries; None removes a default) ...
    named = {k: v for k, v in config.items() if k.endswith("_token") and (v is None or isinstance(v, (str, dict)))}
    extra = config.get("extra_special_tokens")
    if isinstance(extra, dict):  # named model-specific tokens
        named.update(extra)
        extra = None
    added = {}  # id -> added token
    if "added_tokens_decoder" in config:
        for id_, tok in config["added_tokens_decoder"].items():
            tok = {"content": tok} if isinstance(tok, str) else tok
            added[int(id_)] = _added_token(tok["content"], id_, tok.get("special", False), **{
                k: tok.get(k, False) for k in ("lstrip", "rstrip", "single_word")})
    else:  # legacy files: special_tokens_map.json, added_tokens.json
        map_additional = None
        for key, value in (_read_json(src / "special_tokens_map.json") or {}).items():
            if key == "additional_special_tokens":
                map_additional = list(value)
            elif key == "extra_special_tokens" and isinstance(value, list):
                have = [_content(t) for t in extra or []]
                extra = list(extra or []) + [t for t in value if _content(t) not in have]
            elif key.endswith("_token") and (value is None or isinstance(value, (str, dict))):
                named[key] = value
        if extra is None:
            extra = map_additional
        specials = {_content(v) for k, v in named.items() if v and k in _SPECIAL_ATTRS}
        specials |= {_content(v) for v in extra or []}
        for content, id_ in (_read_json(src / "added_tokens.json") or {}).items():
            added[int(id_)] = _added_token(content, id_, content in specials)
    # ... over XLMTokenizer's defaults.
    named = {**_DEFAULT_SPECIALS, **named}
    if extra is None:
        extra = list(_DEFAULT_EXTRA_SPECIALS)

    attrs = list(_SPECIAL_ATTRS) + [k for k in named if k not in _SPECIAL_ATTRS]
    named = {k: _content(named[k]) for k in attrs if named.get(k)}
    all_special = list(dict.fromkeys([*named.values(), *map(_content, extra)]))

    # Languages: the tokenizer config's, else the model config's (Transformers keeps both).
    lang2id = _lang_table(config) or _lang_table(_read_json(src / "config.json") or {})

    max_length = config.get("model_max_length", config.get("max_len"))
    return {
        "do_lowercase_and_remove_accent": bool(config.get("do_lowercase_and_remove_accent", True)),
        "special_tokens": named,
        "all_special_tokens": all_special,
        "added_tokens": [added[i] for i in sorted(added)],
        "languages": [code for code, _ in sorted(lang2id.items(), key=lambda kv: kv[1])],
        "lang2id": lang2id,
        "split_special_tokens": bool(config.get("split_special_tokens", False)),
        "clean_up_tokenization_spaces": bool(config.get("clean_up_tokenization_spaces", False)),
        "model_max_length": int(max_length) if max_length is not None and max_length <= _LARGE_INTEGER else None,
        "padding_side": config.get("padding_side", "right"),
        "truncation_side": config.get("truncation_side", "right"),
    }


# --------------------------------------------------------------------------------------------
# 4. The tokenizer
# --------------------------------------------------------------------------------------------


class XLMTokenizer:
    """Transformers-exact XLM tokenizer (Moses pre-tokenisation, `</w>` BPE)."""

    def __init__(self, vocab: dict, merges: list, settings: dict, source_dir=None, pretokenize_by_lang=None):
        try:
            import sacremoses
        except ImportError:
            raise MissingExtraError("XLM's tokenizer needs sacremoses: pip install sacremoses") from None
        self._sm = sacremoses
        self._settings = dict(settings)
        self._source_dir = Path(source_dir) if source_dir is not None else None
        if pretokenize_by_lang is None:
            pretokenize_by_lang = settings.get("pretokenize_by_lang", False)
        self.pretokenize_by_lang = bool(pretokenize_by_lang)
        self.do_lowercase_and_remove_accent = settings["do_lowercase_and_remove_accent"]
        self._lang2id = {code: int(i) for code, i in settings["lang2id"].items()}
        self.languages = [code for code, _ in sorted(self._lang2id.items(), key=lambda kv: kv[1])]

        self._encoder = vocab
        self._decoder = {v: k for k, v in vocab.items()}
        self._bpe_ranks = dict(zip(merges, range(len(merges))))
        self._bpe_cache = {}
        self._moses_normalizers, self._moses_tokenizers, self._segmenters = {}, {}, {}

        # Added tokens: those from the files, then each special token not yet added (Transformers'
        # `_add_tokens`): its vocab.json id, or the next free id.
        self._added = {t["id"]: dict(t) for t in settings["added_tokens"]}
        added_ids = {t["content"]: t["id"] for t in self._added.values()}
        vocab_now = dict(vocab, **added_ids)
        next_id = len(vocab_now)
        for content in settings["all_special_tokens"]:
            if not content or content in added_ids:
                continue
            if content not in vocab_now:
                vocab_now[content] = next_id
                next_id += 1
            id_ = vocab_now[content]
            self._added[id_] = _added_token(content, id_, True)
            added_ids[content] = id_
        self._added_ids = added_ids
        self._trie = build_trie(added_ids)
        self._size = len(dict(vocab, **added_ids))
        self._specials = dict(settings["special_tokens"])
        self._all_special = list(settings["all_special_tokens"])

    # ---- construction / persistence ----------------------------------------------------------

    @staticmethod
    def _read_vocab_merges(directory: Path, vocab_file=VOCAB_FILE, merges_file=MERGES_FILE):
        vocab = _read_json(directory / vocab_file)
        if not isinstance(vocab, dict):
            raise TokenizerError(f"{directory / vocab_file}: missing or not a JSON object")
        try:
            lines = (directory / merges_file).read_text(encoding="utf-8").split("\n")[:-1]
        except FileNotFoundError:
            raise TokenizerError(f"{directory}: no {merges_file}") from None
        # As Transformers: the last line is dropped (it expects a final newline), fields past 2 ignored.
        return vocab, [tuple(line.split()[:2]) for line in lines]

    @classmethod
    def from_hf_dir(cls, src_dir, family="xlm", pretokenize_by_lang=False) -> "XLMTokenizer":
        """From a Transformers XLM tokenizer dir: vocab.json, merges.txt, tokenizer_config.json
        (+ special_tokens_map.json / added_tokens.json), languages from config.json if needed."""
        if str(family).lower() != "xlm":
            raise TokenizerError(f"unknown tokenizer family {family!r} for XLMTokenizer; it reads xlm")
        src = Path(src_dir)
        if not src.is_dir():
            raise TokenizerError(f"{src}: not a directory")
        settings = _resolve_hf_dir(src)
        vocab, merges = cls._read_vocab_merges(src)
        return cls(vocab, merges, settings, source_dir=src, pretokenize_by_lang=pretokenize_by_lang)

    def save(self, out_dir):
        """Writes kzoo_tokenizer.json and copies of the Transformers tokenizer files (never config.json)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self._source_dir is None:
            raise TokenizerError("this tokenizer has no source files to save (use from_hf_dir or load)")
        copied = []
        for name in HF_FILES:
            src = self._source_dir / name
            if src.is_file():
                if not (out / name).exists() or (out / name).resolve() != src.resolve():
                    shutil.copyfile(src, out / name)
                copied.append(name)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": "xlm",
                "vocab_file": VOCAB_FILE, "merges_file": MERGES_FILE, "vocab_size": self.vocab_size,
                **{k: self._settings[k] for k in _SETTINGS if k in self._settings},
                "added_tokens": [self._added[i] for i in sorted(self._added)],
                "pretokenize_by_lang": self.pretokenize_by_lang, "source_files": copied}
        (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, model_dir) -> "XLMTokenizer":
        """The tokenizer of a kzoo model dir (no Transformers or torch needed)."""
        d = Path(model_dir)
        meta = _read_json(d / META_FILE)
        if meta is None:
            raise TokenizerError(f"{d}: no kzoo tokenizer ({META_FILE} is missing)")
        if meta.get("format") != FORMAT:
            raise TokenizerError(f"{d / META_FILE}: not an XLM tokenizer (format {meta.get('format')!r})")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise TokenizerError(f"{d / META_FILE}: format_version {meta['format_version']} is newer than this kzoo")
        vocab, merges = cls._read_vocab_merges(d, meta.get("vocab_file", VOCAB_FILE),
                                               meta.get("merges_file", MERGES_FILE))
        return cls(vocab, merges, meta, source_dir=d)

    # ---- vocabulary -----------------------------------------------------------------------------

    @property
    def family(self) -> str:
        return "xlm"

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens (vocab.json + added tokens) == `len(transformers_tokenizer)`."""
        return self._size

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            if tokens in self._added_ids:
                return self._added_ids[tokens]
            unk = self._encoder.get(self._specials.get("unk_token"))
            return self._encoder.get(tokens, unk if unk is not None else self._added_ids.get(
                self._specials.get("unk_token")))
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, (int, np.integer)):
            i = int(ids)
            return self._added[i]["content"] if i in self._added else self._decoder.get(
                i, self._specials.get("unk_token"))
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def _special_id(self, attr):
        token = self._specials.get(attr)
        return None if token is None else self.convert_tokens_to_ids(token)

    @property
    def pad_token_id(self) -> int:
        return self._special_id("pad_token")

    @property
    def unk_token_id(self) -> int:
        return self._special_id("unk_token")

    @property
    def bos_token_id(self) -> int:
        return self._special_id("bos_token")

    @property
    def cls_token_id(self) -> int:
        """The first token of every sequence, `<s>` (XLM's bos; Transformers' `cls_token` is `</s>`)."""
        return self.bos_token_id

    @property
    def sep_token_id(self) -> int:
        return self._special_id("sep_token")

    @property
    def mask_token(self) -> str:
        return self._specials.get("mask_token")

    @property
    def mask_token_id(self) -> int:
        return self._special_id("mask_token")

    @property
    def all_special_tokens(self) -> list:
        return list(self._all_special)

    @property
    def all_special_ids(self) -> list:
        return self.convert_tokens_to_ids(self._all_special)

    # ---- languages -------------------------------------------------------------------------------

    def _resolve_lang(self, lang) -> str | None:
        if lang is None:
            if not self.languages or "en" in self.languages:
                return "en"
            raise TokenizerError(f"this model has no 'en'; pass lang= one of: {', '.join(self.languages)}")
        if self.languages and lang not in self._lang2id:
            raise TokenizerError(f"unknown language {lang!r}; this model has: {', '.join(self.languages)}")
        return lang

    def lang_id(self, lang=None) -> int:
        """XLM's language id for `lang` (0 for a model without languages)."""
        return self._lang2id.get(self._resolve_lang(lang), 0) if self.languages else 0

    def _pair_langs(self, lang):
        if isinstance(lang, (tuple, list)):
            if len(lang) != 2:
                raise TokenizerError(f"lang must be a code or a (text, pair) pair of codes, got {lang!r}")
            return self._resolve_lang(lang[0]), self._resolve_lang(lang[1])
        lang = self._resolve_lang(lang)
        return lang, lang

    # ---- text -> tokens ------------------------------------------------------------------------

    def _moses(self, kind, lang):
        cache = self._moses_normalizers if kind == "norm" else self._moses_tokenizers
        if lang not in cache:
            cls = self._sm.MosesPunctNormalizer if kind == "norm" else self._sm.MosesTokenizer
            cache[lang] = cls(lang=lang)
        return cache[lang]

    def _moses_pipeline(self, text, lang):
        text = replace_unicode_punct(text)
        text = self._moses("norm", lang).normalize(text)
        return remove_non_printing_char(text)

    def _segmenter(self, lang):
        """The word segmenter of zh / th / ja, or a MissingExtraError naming the pip extra."""
        if lang not in self._segmenters:
            module, extra, package = _EXTRAS[lang]
            try:
                mod = importlib.import_module(module)
            except ImportError:
                raise MissingExtraError(
                    f"pre-tokenising {lang!r} needs the {package} package: pip install '{extra}'") from None
            if lang == "zh":
                self._segmenters[lang] = mod.cut
            elif lang == "th":
                self._segmenters[lang] = mod.word_tokenize
            else:
                try:
                    tagger = mod.Mykytea(f"-model {KYTEA_MODEL}")
                except Exception as e:  # noqa: BLE001 - KyTea reports a missing model in many ways
                    raise TokenizerError(f"KyTea could not load its model {KYTEA_MODEL} ({e})") from None
                self._segmenters[lang] = lambda text: list(tagger.getWS(text))
        return self._segmenters[lang]

    def _words(self, text, lang) -> list:
        """Pre-tokenisation of a piece of text (Transformers' `_tokenize` up to BPE)."""
        if lang not in _EXTRAS:
            text = self._moses_pipeline(text, lang)
            if lang == "ro":
                text = romanian_preprocessing(text)
            words = self._moses("tok", lang).tokenize(text, return_str=False, escape=False)
        elif lang == "zh":  # segment first, then Moses' normalisation
            words = self._moses_pipeline(" ".join(self._segmenter(lang)(text)), lang).split()
        else:
            segment = self._segmenter(lang)
            words = segment(self._moses_pipeline(text, lang))
        if self.do_lowercase_and_remove_accent:
            words = lowercase_and_remove_accent(words)
        return [w for w in words if w]

    def bpe(self, word: str) -> list:
        """BPE pieces of one word (Transformers' `bpe(word).split(" ")`, `</w>` on the last piece)."""
        if word in self._bpe_cache:
            return self._bpe_cache[word]
        symbols = tuple(word[:-1]) + (word[-1] + "</w>",)
        pairs = _pairs(symbols)
        if not pairs:
            return (word + "</w>").split(" ")  # (a word can hold spaces: Thai segmenter output)
        ranks = self._bpe_ranks
        while True:
            bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if bigram not in ranks:
                break
            first, second = bigram
            merged, i = [], 0
            while i < len(symbols):
                try:
                    j = symbols.index(first, i)
                except ValueError:
                    merged.extend(symbols[i:])
                    break
                merged.extend(symbols[i:j])
                i = j
                if symbols[i] == first and i < len(symbols) - 1 and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = tuple(merged)
            if len(symbols) == 1:
                break
            pairs = _pairs(symbols)
        pieces = " ".join(symbols)
        if pieces == "\n  </w>":  # Transformers' special case, kept for equality
            pieces = "\n</w>"
        if len(self._bpe_cache) > 200_000:
            self._bpe_cache.clear()
        self._bpe_cache[word] = pieces.split(" ")
        return self._bpe_cache[word]

    def tokenize(self, text: str, lang=None) -> list:
        """Tokens of `text` without special tokens around it (Transformers' `tokenize`)."""
        lang = self._resolve_lang(lang)
        moses_lang = lang if self.pretokenize_by_lang else "en"
        if self._settings.get("split_special_tokens"):  # added tokens are plain text then
            return [piece for word in self._words(text, moses_lang) for piece in self.bpe(word)]
        pieces = split_on_added_tokens(text, self._trie)
        for i, piece in enumerate(pieces):  # added tokens' rstrip / lstrip / single_word, in place
            if piece not in self._added_ids:
                continue
            tok = self._added[self._added_ids[piece]]
            left = pieces[i - 1] if i > 0 else None
            right = pieces[i + 1] if i < len(pieces) - 1 else None
            if tok["rstrip"] and right:
                pieces[i + 1] = right.lstrip()
            if tok["lstrip"] and left:
                pieces[i - 1] = left.rstrip()
            if tok["single_word"]:
                if left and left[-1] != " ":
                    pieces[i - 1] += piece
                    pieces[i] = ""
                elif right and right[0] != " ":
                    pieces[i + 1] = piece + pieces[i + 1]
                    pieces[i] = ""
        tokens = []
        for piece in pieces:
            if not piece:
                continue
            if piece in self._added_ids or piece in self._all_special:
                tokens.append(piece)
            else:
                tokens += [bpe_piece for word in self._words(piece, moses_lang) for bpe_piece in self.bpe(word)]
        return tokens

    # ---- encoding --------------------------------------------------------------------------------

    def _ids(self, text, lang) -> list:
        if not isinstance(text, str):
            raise TokenizerError(f"expected a string, got {type(text).__name__}")
        return self.convert_tokens_to_ids(self.tokenize(text, lang))

    def _truncate(self, a, b, remove):
        """Transformers' slow-tokenizer "longest_first" truncation of `remove` tokens."""
        left = self._settings.get("truncation_side", "right") == "left"
        if remove <= 0:
            return a, b
        if b is None:
            return (a[remove:], None) if left else (a[:-remove], None)
        first = min(abs(len(b) - len(a)), remove)
        second = remove - first
        if len(a) > len(b):
            cut_a, cut_b = first + second // 2, second - second // 2
        else:
            cut_a, cut_b = second // 2, first + second - second // 2
        if left:  # (Transformers turns an empty pair into no pair here)
            return a[cut_a:], (b[cut_b:] if b else None)
        return (a[:-cut_a] if cut_a > 0 else a), (b[:-cut_b] if b and cut_b > 0 else b)

    def _build(self, a, b, add_special_tokens, max_length, truncation):
        """(ids, segment ids, where the pair part starts) as Transformers' `prepare_for_model`."""
        if truncation and max_length is None:
            max_length = self._settings.get("model_max_length")
        if add_special_tokens:
            num_special = 2 if b is None else 3
        else:
            num_special = 0
        total = len(a) + len(b or []) + num_special
        if truncation and max_length and total > max_length:
            a, b = self._truncate(a, b, total - max_length)
        if not add_special_tokens:
            ids = a + (b or [])
            return ids, [0] * len(ids), len(a)
        bos, sep = self.bos_token_id, self.sep_token_id
        ids = [bos, *a, sep]
        first = len(ids)
        if b is not None:
            ids += [*b, sep]
        return ids, [0] * first + [1] * (len(ids) - first), first

    def encode(self, text, pair=None, lang=None, add_special_tokens=True, max_length=None,
               truncation=False) -> list:
        """== Transformers' `tokenizer(text, pair, add_special_tokens=..., max_length=...,
        truncation=...)["input_ids"]`. `lang`: a code, or (text's, pair's) codes."""
        lang_a, lang_b = self._pair_langs(lang)
        a = self._ids(text, lang_a)
        b = self._ids(pair, lang_b) if pair is not None else None
        return self._build(a, b, add_special_tokens, max_length, truncation)[0]

    def __call__(self, texts, pairs=None, lang=None, max_length=None, truncation=True, padding="longest") -> dict:
        """Batch encoding like `tokenizer(texts, pairs, padding=..., truncation=..., max_length=...)`.

        numpy int32 [batch, length]: token_ids, padding_mask (1 token / 0 padding), segment_ids,
        lang_ids (the language id of each position, XLM's `langs`; with lang=(a, b) the pair part
        gets b's; padding gets a's).
        segment_ids are all -1 ("not given"): XLM would add the *word* embedding of a token type,
        and neither the original XLM nor Transformers' tokenizer (model_input_names) feeds them.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise TokenizerError(f"{len(texts)} texts but {len(pairs)} pairs")
        lang_a, lang_b = self._pair_langs(lang)
        id_a, id_b = (self._lang2id.get(lang_a, 0), self._lang2id.get(lang_b, 0)) if self.languages else (0, 0)
        rows = []
        for i, text in enumerate(texts):
            b = self._ids(pairs[i], lang_b) if pairs is not None else None
            rows.append(self._build(self._ids(text, lang_a), b, True, max_length, truncation))
        longest = max((len(ids) for ids, _, _ in rows), default=0)
        if padding in (True, "longest"):
            width = longest
        elif padding == "max_length":
            target = max_length if max_length is not None else self._settings.get("model_max_length")
            if target is None:
                raise TokenizerError('padding="max_length" needs max_length')
            width = max(target, longest)
        else:
            raise TokenizerError(f'padding must be "longest" or "max_length", not {padding!r}')
        out = {"token_ids": np.full((len(rows), width), self.pad_token_id, np.int32),
               "padding_mask": np.zeros((len(rows), width), np.int32),
               "segment_ids": np.full((len(rows), width), -1, np.int32),
               "lang_ids": np.full((len(rows), width), id_a, np.int32)}
        left = self._settings.get("padding_side", "right") == "left"
        for r, (ids, _, first) in enumerate(rows):
            start = width - len(ids) if left else 0
            span = slice(start, start + len(ids))
            out["token_ids"][r, span] = ids
            out["padding_mask"][r, span] = 1
            out["lang_ids"][r, start + first:start + len(ids)] = id_b
        return out

    # ---- decoding --------------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens=False):
        """== Transformers' `decode`: tokens joined, `</w>` -> space, stripped. A batch gives a list."""
        if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple, np.ndarray)):
            return [self.decode(row, skip_special_tokens) for row in ids]
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.decode(row, skip_special_tokens) for row in ids]
        # (Transformers skips special tokens in sequences only, not for a lone int)
        skip = set(self.all_special_ids) if skip_special_tokens and ids.ndim else set()
        tokens = [self.convert_ids_to_tokens(int(i)) for i in ids.reshape(-1).tolist() if int(i) not in skip]
        text = "".join(tokens).replace("</w>", " ").strip()
        if self._settings.get("clean_up_tokenization_spaces"):
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text
