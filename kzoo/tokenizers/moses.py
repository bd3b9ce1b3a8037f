"""XLM's text pre-processing as Transformers 5.23's `XLMTokenizer` runs it: Moses (through sacremoses),
the zh / th / ja word segmenters, Transformers' added-token trie, and the `</w>` BPE. Plain functions;
kzoo.tokenizers.xlm composes them.
"""

from __future__ import annotations

import importlib
import os
import re
import unicodedata

from kzoo.errors import TokenizerError

# --- segmenters: Chinese, Thai, Japanese (optional extras) -------------------------------------------

# Languages with their own word segmenter: module, pip extra, package.
SEGMENTED = {"zh": ("rjieba", "kzoo[xlm-zh]", "rjieba"),
             "th": ("pythainlp.tokenize", "kzoo[xlm-th]", "pythainlp"),
             "ja": ("Mykytea", "kzoo[xlm-ja]", "kytea")}
# Transformers hard-codes where the KyTea model lives.
KYTEA_MODEL = os.path.join(os.path.expanduser("~"), "local", "share", "kytea", "model.bin")


class MissingExtraError(TokenizerError, ImportError):
    """A language needs an optional package (its pip extra is named in the message)."""


def segmenter(lang, cache: dict):
    """The word segmenter of zh / th / ja (kept in `cache`), or a MissingExtraError naming the pip extra."""
    if lang not in cache:
        module, extra, package = SEGMENTED[lang]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise MissingExtraError(f"pre-tokenising {lang!r} needs the {package} package: "
                                    f"pip install '{extra}'") from None
        if lang == "zh":
            cache[lang] = mod.cut
        elif lang == "th":
            cache[lang] = mod.word_tokenize
        else:
            try:
                tagger = mod.Mykytea(f"-model {KYTEA_MODEL}")
            except Exception as e:  # noqa: BLE001 - KyTea reports a missing model in many ways
                raise TokenizerError(f"KyTea could not load its model {KYTEA_MODEL} ({e})") from None
            cache[lang] = lambda text: list(tagger.getWS(text))
    return cache[lang]


# --- Transformers' text functions (tokenization_xlm.py, unchanged in behaviour) ----------------

UNICODE_PUNCT = (  # Moses' replace-unicode-punctuation.perl, in Transformers' order
    ("，", ","), (re.compile(r"。\s*"), ". "), ("、", ","), ("”", '"'), ("“", '"'), ("∶", ":"),
    ("：", ":"), ("？", "?"), ("《", '"'), ("》", '"'), ("）", ")"), ("！", "!"), ("（", "("),
    ("；", ";"), ("１", "1"), ("」", '"'), ("「", '"'), ("０", "0"), ("３", "3"), ("２", "2"),
    ("５", "5"), ("６", "6"), ("９", "9"), ("７", "7"), ("８", "8"), ("４", "4"),
    (re.compile(r"．\s*"), ". "), ("～", "~"), ("’", "'"), ("…", "..."), ("━", "-"), ("〈", "<"),
    ("〉", ">"), ("【", "["), ("】", "]"), ("％", "%"),
)


def replace_unicode_punct(text: str) -> str:
    for old, new in UNICODE_PUNCT:
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


# --- cutting added tokens out of the text (Transformers' Trie) -------------------------------------


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


# --- BPE ------------------------------------------------------------------------------------------


def bpe(word: str, ranks: dict) -> list:
    """BPE pieces of one word (Transformers' `bpe(word).split(" ")`, `</w>` on the last piece);
    ranks: merge pair -> its line in merges.txt."""
    symbols = tuple(word[:-1]) + (word[-1] + "</w>",)
    pairs = _pairs(symbols)
    if not pairs:
        return (word + "</w>").split(" ")  # (a word can hold spaces: Thai segmenter output)
    while True:
        bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if bigram not in ranks:
            break
        symbols = _merge(symbols, *bigram)
        if len(symbols) == 1:
            break
        pairs = _pairs(symbols)
    pieces = " ".join(symbols)
    if pieces == "\n  </w>":  # Transformers' special case, kept for equality
        pieces = "\n</w>"
    return pieces.split(" ")


def _merge(symbols: tuple, first: str, second: str) -> tuple:
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
    return tuple(merged)
