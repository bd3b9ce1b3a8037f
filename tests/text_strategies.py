"""Random text that mixes scripts, for tokenizer agreement tests (property-based and sampled).

One recipe serves both: `mixed_text()` is a hypothesis strategy (shrinks to a minimal failing string)
and `sample_texts(n, seed)` draws the same kind of strings with `random.Random`, many at a time.

A string is a few "words" joined by ordinary and unusual separators (none at all, tabs, newlines,
NBSP, ideographic and em spaces, an isolated mark after NBSP). Words come from many scripts, with
what makes them hard: combining marks after letters (one, or two stacked), NFD / NFC / NFKC forms,
ZWJ / ZWNJ inside Arabic and Devanagari words, U+061C, Thai and Hebrew marks, half-width kana with
voiced-sound marks, Hangul syllables and conjoining jamo, emoji with skin tones, ZWJ sequences,
flags and VS16, compatibility characters (ligatures, full-width forms, circled digits, fractions),
digit groups and punctuation runs that tie in score ("...", "--").

`adversarial=True` adds what kzoo once documented as differences: a combining mark right after a
compatibility character, and two or more random marks stacked on one letter (Transformers' charsmap
step treats a grapheme by its byte length; see converters/sentencepiece.py).
"""

from __future__ import annotations

import random
import unicodedata


def _chars(*ranges) -> str:
    return "".join(chr(c) for a, b in ranges for c in range(a, b + 1))


LETTERS = {
    "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" + "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšžłđßÀÉÖÜŁ"
             + "ǘǜệấầẩẫậắằếềểễốồổỗộớờởỡợứừửữựḗṓ",  # two marks each in NFD (Vietnamese, pinyin)
    "cyrillic": _chars((0x410, 0x44F)) + "ёЁїієґ",
    "greek": _chars((0x3B1, 0x3C9)) + "άέήίόύώΆΈΉ" + "ἄἅἀῶᾄὢῷἕἤὕ",  # polytonic: up to three marks in NFD
    "arabic": _chars((0x627, 0x63A), (0x641, 0x64A)) + "پچژگ",
    "hebrew": _chars((0x5D0, 0x5EA)),
    "devanagari": _chars((0x915, 0x939)),
    "thai": _chars((0xE01, 0xE2E)),
    "hangul": "".join(chr(0xAC00 + i) for i in range(0, 11172, 37)),
    "jamo": _chars((0x1100, 0x1112)),
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    "kana": _chars((0x3041, 0x3093), (0x30A1, 0x30F3)),
    "halfwidth": _chars((0xFF66, 0xFF9D)),
}
MARKS = {
    "latin": _chars((0x300, 0x36F)),
    "cyrillic": _chars((0x300, 0x36F)),
    "greek": "\u0300\u0301\u0308\u0342\u0313\u0314\u0345",
    "arabic": _chars((0x64B, 0x652)) + "\u0670",
    "hebrew": _chars((0x5B0, 0x5BC)),
    "devanagari": _chars((0x93E, 0x94D)) + "\u0901\u0902\u0903\u093C",
    "thai": "\u0E31" + _chars((0xE34, 0xE3A), (0xE47, 0xE4E)),
    "halfwidth": "\uFF9E\uFF9F",
    "jamo": _chars((0x1161, 0x1175)),  # vowels after leading consonants: conjoining syllables
}
SINGLE_MARKS = {k: "".join(m for m in v if not unicodedata.decomposition(m)) for k, v in MARKS.items()}  # (U+0344: two)
COMPAT = "ﬁﬂﬀﬃﬄ" + _chars((0xFF21, 0xFF3A), (0xFF10, 0xFF19), (0x2460, 0x2473)) + "㎏㎞㍿½¼¾™℃ⅫⅣ…‼"
EMOJI = ["😀", "👍", "❤", "✔", "🎉", "👩", "👨", "🧑"]
SKIN = _chars((0x1F3FB, 0x1F3FF))
FLAGS = ["\U0001F1EB\U0001F1F7", "\U0001F1EF\U0001F1F5", "\U0001F1E9\U0001F1EA"]
PUNCT = ["...", "..", "…", "--", "—", "!!", "?!", "«", "»", "„", "“", "”", "``", "''", "(", ")", ",", ";", ":", "'", '"']
SEPARATORS = [" "] * 12 + ["", "", "", "  ", "\t", "\n", "\r\n", "\xa0", "\u3000", "\u2003"]
FORMS = [None, None, "NFC", "NFD", "NFKC"]


class _Random:
    """The draws the recipe needs, from random.Random."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, seq):
        return self.rng.choice(seq)

    def integer(self, low, high):
        return self.rng.randint(low, high)


class _Hypothesis:
    """The same draws from hypothesis' `draw`, so that failures shrink."""

    def __init__(self, draw):
        from hypothesis import strategies as st

        self.draw, self.st = draw, st

    def pick(self, seq):
        return self.draw(self.st.sampled_from(list(seq)))

    def integer(self, low, high):
        return self.draw(self.st.integers(low, high))


def _word(d, adversarial: bool) -> str:
    kind = d.pick(list(LETTERS) * 2 + ["compat", "emoji", "digits", "punct", "isolated mark"])
    if kind == "compat":
        word = "".join(d.pick(COMPAT) for _ in range(d.integer(1, 3)))
        return word + (d.pick(MARKS["latin"] + MARKS["arabic"]) if adversarial and d.integer(0, 3) == 0 else "")
    if kind == "emoji":
        emoji = d.pick(EMOJI)
        form = d.integer(0, 4)
        if form == 1:
            emoji += d.pick(SKIN)
        elif form == 2:
            emoji += "\u200d" + d.pick(EMOJI)
        elif form == 3:
            emoji += "\ufe0f"
        elif form == 4:
            emoji = d.pick(FLAGS)
        return emoji
    if kind == "digits":
        return d.pick(["1,000", "3.14", "2024", "10,000,000", "0", "42%", "1/2"])
    if kind == "punct":
        return "".join(d.pick(PUNCT) for _ in range(d.integer(1, 3)))
    if kind == "isolated mark":
        return "\xa0" + d.pick(MARKS["latin"] if adversarial else SINGLE_MARKS["latin"])
    word = ""
    for i in range(d.integer(1, 7)):
        letter = d.pick(LETTERS[kind])
        word += letter
        if kind in MARKS and (adversarial or not unicodedata.decomposition(letter)):  # else: stacked
            for _ in range(d.pick([0, 0, 0, 1, 1, 2] if adversarial else [0, 0, 1])):
                word += d.pick(MARKS[kind] if adversarial else SINGLE_MARKS[kind])
        if kind in ("arabic", "devanagari") and d.integer(0, 5) == 0:
            word += ("\u094d" if kind == "devanagari" else "") + d.pick("\u200c\u200d")
    if kind == "arabic" and d.integer(0, 3) == 0:
        word = "\u061c" + word
    return word


def _text(d, adversarial: bool) -> str:
    text = ""
    for i in range(d.integer(1, 6)):
        text += (d.pick(SEPARATORS) if i else d.pick(["", "", " ", "\xa0"])) + _word(d, adversarial)
    form = d.pick(FORMS)
    return unicodedata.normalize(form, text) if form else text


def sample_texts(n: int, seed: int = 0, adversarial: bool = False) -> list[str]:
    d = _Random(random.Random(seed))
    return [_text(d, adversarial) for _ in range(n)]


def mixed_text(adversarial: bool = False):
    """A hypothesis strategy for one string."""
    from hypothesis import strategies as st

    return st.composite(lambda draw: _text(_Hypothesis(draw), adversarial))()
