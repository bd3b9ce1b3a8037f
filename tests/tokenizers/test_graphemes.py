"""kzoo.tokenizers.graphemes: the in-graph grapheme segmentation behind the grapheme marker (Transformers
rewrites a grapheme of 6 bytes or more character by character; see converters/sentencepiece.py)."""

import random

import numpy as np
import pytest
import tensorflow as tf

import text_strategies
from kzoo.tokenizers import graphemes

MARKER = graphemes.MARKER


def _reference(text):
    """The marker between the characters of each grapheme of 6 bytes or more, graphemes from `regex`'s \\X."""
    import regex

    return "".join(MARKER.join(g) if len(g.encode()) >= 6 else g for g in regex.findall(r"\X", text))


def _marked(texts):
    return [t.decode() for t in graphemes.marked(tf.constant([t.encode() for t in texts], tf.string), MARKER).numpy()]


def test_table_is_the_unicode_data_of_regex():
    """grapheme_break.txt holds what `python -m kzoo.converters.graphemes` writes from the installed `regex`."""
    from kzoo.converters.graphemes import TABLE_FILE, code_point_values, ranges_text

    def body(text):
        return [line for line in text.splitlines() if not line.startswith("#")]

    assert body(TABLE_FILE.read_text()) == body(ranges_text(code_point_values()))


def test_segmentation_is_uax29():
    """Mixed scripts, marks, Hangul jamo, emoji ZWJ sequences, flags, Prepend, CR LF, controls: the same
    long graphemes as regex's \\X (but GB9c, below)."""
    import regex

    rng = random.Random(0)
    pool = [chr(c) for c in range(0x20, 0x30000) if not 0xD800 <= c < 0xE000]
    special = ("\r\n\t \u200d\u200c\U0001F1EB\U0001F1F7\U0001F468\U0001F3FB\u0301\u1100\u1161\u11a8\uac00"
               "\u0600\u0e33\u093e\u0903\U0001F469\ufe0f")
    texts = text_strategies.sample_texts(600, seed=3, adversarial=True)
    texts += ["".join(rng.choice(special) if rng.random() < 0.6 else rng.choice(pool) for _ in range(rng.randint(0, 30)))
              for _ in range(600)]
    texts += ["", "e\u0301\u0301\u0301", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\U0001F1EB\U0001F1F7" * 3,
              "\u0600\u0600\u0600 \u0301", "x\r\n\u0301\u0301\u0301"]
    linker = regex.compile(r"\p{InCB=Linker}")
    texts = [t for t in texts if not linker.search(t)]
    got = _marked(texts)
    assert [t for t, g in zip(texts, got) if g != _reference(t)] == []
    assert sum(MARKER in g for g in got) > 300  # (the test sees long graphemes)


def test_conjuncts_join_after_a_consonant_only():
    """GB9c joins consonant + linker (virama) + consonant; `regex` also joins after other letters, the Rust
    segmentation of Transformers does not (checked in test_sentencepiece.py's ids)."""
    assert _marked(["\u0915\u094d\u0937", "\u00bd\u094d\u0915", "a\u094d\u0915\u0301"]) == [
        MARKER.join("\u0915\u094d\u0937"), "\u00bd\u094d\u0915", "a\u094d\u0915\u0301"]


def test_markers_per_text_are_capped():
    """At most MAX_MARKERS markers in one text (what the join rounds hold); every character is kept."""
    text = "e" + "\u0301" * (graphemes.MAX_MARKERS + 50)
    got, marks = graphemes.marked(tf.constant([text.encode(), b"ok"]), MARKER, with_marks=True)
    got = got.numpy()[0].decode()
    assert got.count(MARKER) == graphemes.MAX_MARKERS == int(np.sum(marks[0].numpy()))
    assert got.replace(MARKER, "") == text


@pytest.mark.parametrize("texts", [[], [""], ["", "x"]])
def test_empty_batches_and_texts(texts):
    assert _marked(texts) == texts
