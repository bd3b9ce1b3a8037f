"""Grapheme clusters in the graph (builtin TFLite ops and tf-text's only), for the SentencePiece tokenizers.

Transformers' charsmap step (the `tokenizers` library's Precompiled normaliser) rewrites a grapheme (a
UAX #29 extended grapheme cluster) of 6 bytes or more character by character, so nothing inside it is
composed ("e" + three stacked marks), while tf-text's op matches its rules wherever they are. `marked`
puts a marker between the characters of such graphemes; the folded charsmap deletes the marker
(kzoo.converters.sentencepiece), so no rule matches across it and each character is rewritten alone.

The grapheme rules (GB3-GB13, with GB9c's Indic conjuncts and GB11's emoji ZWJ sequences) run as
vectorized comparisons of each character with the one before it; the rules that look further back
find "the last character before this one that is not X" with a segment max. Each character's properties
come from grapheme_break.txt (written from the `regex` library by kzoo.converters.graphemes).
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path

import numpy as np
import tensorflow as tf

TABLE_FILE = "grapheme_break.txt"
# Grapheme_Cluster_Break classes (value % 16), then flags
CLASSES = {"Other": 0, "CR": 1, "LF": 2, "Control": 3, "Extend": 4, "ZWJ": 5, "Regional_Indicator": 6,
           "Prepend": 7, "SpacingMark": 8, "L": 9, "V": 10, "T": 11, "LV": 12, "LVT": 13}
PICTOGRAPHIC, CONSONANT, LINKER, INCB_EXTEND = 16, 32, 64, 128
# Two noncharacters: what a tokenizer converted by kzoo puts in, and its folded charsmap deletes (a text
# holding this very pair loses it; Transformers would give unknown ids)
MARKER = "\ufdd0\ufdd1"
LONG = 6  # bytes: a grapheme this long or longer is rewritten character by character
# Markers are joined in with tf-text's string-join op, BRANCH pieces at a time, ROUNDS times over: at most
# BRANCH**ROUNDS pieces, so a text gets markers at its first MAX_MARKERS places only.
BRANCH, ROUNDS = 32, 3
MAX_MARKERS = (BRANCH**ROUNDS - 2) // 2


def _pair_rules() -> np.ndarray:
    """bool [16, 16]: GB3-GB9b, whether a character of class c joins one of class p before it ([p, c])."""
    k = CLASSES
    pairs = np.zeros((16, 16), bool)
    for (p, c) in np.ndindex(16, 16):
        control = {k["CR"], k["LF"], k["Control"]}
        if p in control or c in control:
            pairs[p, c] = (p, c) == (k["CR"], k["LF"])  # GB3-5
        else:
            pairs[p, c] = ((p == k["L"] and c in (k["L"], k["V"], k["LV"], k["LVT"]))  # GB6-8: Hangul syllables
                           or (p in (k["LV"], k["V"]) and c in (k["V"], k["T"]))
                           or (p in (k["LVT"], k["T"]) and c == k["T"])
                           or c in (k["Extend"], k["ZWJ"], k["SpacingMark"]) or p == k["Prepend"])  # GB9-9b
    return pairs


_PAIRS = _pair_rules()


def may_join(first: str, second: str) -> bool:
    """Whether one grapheme can hold `first` then `second` (so a marker may come between them)."""
    block_of, rows = tables()
    p, c = (int(rows[block_of[ord(x) // 256] * 256 + ord(x) % 256]) for x in (first, second))
    k = CLASSES
    return bool(_PAIRS[p % 16, c % 16] or p % 16 == c % 16 == k["Regional_Indicator"]
                or (c & PICTOGRAPHIC and p % 16 == k["ZWJ"]) or (c & CONSONANT and p & (LINKER | INCB_EXTEND)))
Characters = collections.namedtuple("Characters", "byte_splits before char_start code")


@functools.lru_cache(maxsize=1)
def tables():
    """(block of 256 code points -> row, rows: uint8 values) of grapheme_break.txt."""
    values = np.zeros(0x110000, np.uint8)
    for line in Path(__file__).with_name(TABLE_FILE).read_text().splitlines():
        if line and not line.startswith("#"):
            span, value = line.split()
            first, _, last = span.partition("..")
            values[int(first, 16):int(last or first, 16) + 1] = int(value)
    rows, block_of = np.unique(values.reshape(-1, 256), axis=0, return_inverse=True)
    return block_of.reshape(-1).astype(np.int32), rows.reshape(-1)


def characters(strings) -> Characters:
    """The characters of 1-D `strings`, UTF-8 decoded with arithmetic (TFLite has no string ops): byte_splits
    [texts + 1] (each text's first byte), before [bytes + 1] (characters before each byte), char_start
    [chars] (each character's first byte) and code [chars] (its code point)."""
    from tensorflow_text.python.ops.byte_splitter import gen_byte_splitter

    values, byte_splits = gen_byte_splitter.tf_text_byte_split_with_offsets(input_values=strings)[:2]
    values, byte_splits = tf.cast(values, tf.int32), tf.cast(byte_splits, tf.int32)
    starts_char = tf.cast((values < 0x80) | (values >= 0xC0), tf.int32)  # every byte but 10xxxxxx
    before = tf.concat([[0], tf.cumsum(starts_char)], 0)
    n_bytes, char_of_byte = tf.size(values), tf.maximum(before[1:] - 1, 0)
    char_start = tf.boolean_mask(tf.range(n_bytes), starts_char > 0)
    following = tf.gather(tf.concat([char_start, [n_bytes]], 0), char_of_byte + 1) - tf.range(n_bytes) - 1
    lead = tf.where(values < 0x80, 0, tf.where(values < 0xC0, 0x80, tf.where(values < 0xE0, 0xC0, tf.where(
        values < 0xF0, 0xE0, 0xF0))))
    payload = (values - lead) * tf.gather(tf.constant([1, 64, 4096, 262144]), tf.clip_by_value(following, 0, 3))
    code = tf.clip_by_value(tf.math.unsorted_segment_sum(payload, char_of_byte, before[-1]), 0, 0x10FFFF)
    return Characters(byte_splits, before, char_start, code)


def marked(strings, marker: str, with_marks=False):
    """1-D `strings` with `marker` between the characters of every grapheme of LONG bytes or more; with
    `with_marks`, also which characters got a marker before them (bool RaggedTensor [texts, (chars)])."""
    return _marked_fn(marker, with_marks)(strings)


# Each graph is one tf.function, traced once per process (~800 ops: ~0.3 s to trace), called from every
# graph that tokenizes (one FunctionDef in a SavedModel however many signatures use it; TFLite inlines it).
@functools.lru_cache(maxsize=None)
def _marked_fn(marker, with_marks):
    return tf.function(lambda s: _marked(s, marker, with_marks), input_signature=[tf.TensorSpec([None], tf.string)],
                       autograph=False)


def _in_long(chars: Characters):
    """bool [chars]: the character continues a grapheme of LONG bytes or more (a marker goes before it)."""
    grapheme, n_bytes = clusters(chars)
    join = tf.concat([[False], tf.equal(grapheme[1:], grapheme[:-1])], 0)
    return join & (tf.gather(n_bytes, grapheme) >= LONG)


def clusters(chars: Characters):
    """(grapheme [chars]: each character's grapheme, numbered over all texts from 0; n_bytes [chars]: each
    grapheme's bytes, by that number)."""
    n_chars = tf.size(chars.code)
    index = tf.range(n_chars)
    char_splits = tf.gather(chars.before, chars.byte_splits)  # [texts + 1]: each text's first character
    text = row_ids(char_splits)
    first = tf.gather(char_splits, text)  # each character's text's first character

    block_of, rows = tables()
    code = chars.code
    props = tf.cast(tf.gather(tf.constant(rows), tf.gather(tf.constant(block_of), code // 256) * 256 + code % 256),
                    tf.int32)
    gcb = props % 16
    flag = {k: props // k % 2 > 0 for k in (PICTOGRAPHIC, CONSONANT, LINKER, INCB_EXTEND)}
    prev = tf.maximum(index - 1, 0)

    def last_not(skipped):  # each character's last character at or before it that is not `skipped` (-1: none)
        segment = tf.cumsum(tf.cast(~skipped, tf.int32))
        return tf.gather(tf.math.unsorted_segment_max(tf.where(skipped, -1, index), segment, n_chars + 1), segment)

    def at(values, where):  # values at `where`, False where it is before its text (-1 included)
        return tf.gather(values, tf.maximum(where, 0)) & (where >= first)

    c, p = gcb, tf.gather(gcb, prev)
    pair = tf.gather(tf.constant(_PAIRS.reshape(-1)), p * 16 + c)  # GB3-GB9b: decided by the two classes
    # GB9c: a consonant, then (InCB Extend | Linker)* holding a Linker, joins the next consonant
    joiners = flag[INCB_EXTEND] | flag[LINKER]
    q = tf.gather(last_not(joiners), prev)
    linkers = tf.cumsum(tf.cast(flag[LINKER], tf.int32))
    conjunct = (flag[CONSONANT] & tf.gather(joiners, prev) & at(flag[CONSONANT], q)
                & (tf.gather(linkers, prev) > tf.gather(linkers, tf.maximum(q, 0))))
    # GB11: a pictograph, Extend*, ZWJ joins the next pictograph
    q = last_not(tf.equal(gcb, CLASSES["Extend"]))
    emoji = (flag[PICTOGRAPHIC] & tf.equal(p, CLASSES["ZWJ"])
             & at(flag[PICTOGRAPHIC], tf.where(index - 1 > first, tf.gather(q, tf.maximum(index - 2, 0)), -1)))
    # GB12-13: regional indicators pair up
    ri = tf.equal(gcb, CLASSES["Regional_Indicator"])
    run = prev - tf.maximum(tf.gather(last_not(ri), prev), first - 1)  # indicators in the run ending before
    flags = ri & tf.gather(ri, prev) & tf.equal(run % 2, 1)
    join = (index > first) & (pair | conjunct | emoji | flags)

    grapheme = tf.cumsum(tf.cast(~join, tf.int32)) - 1
    n_bytes = tf.concat([chars.char_start[1:], chars.byte_splits[-1:]], 0) - chars.char_start
    return grapheme, tf.math.unsorted_segment_sum(n_bytes, grapheme, n_chars)


def _marked(strings, marker, with_marks):
    """marked's graph."""
    chars = characters(strings)
    n_texts = tf.size(strings)
    char_splits = tf.gather(chars.before, chars.byte_splits)
    text = row_ids(char_splits)
    mark = _in_long(chars)
    rank = tf.cumsum(tf.cast(mark, tf.int32), exclusive=True)
    mark &= rank - tf.gather(tf.concat([rank, [0]], 0), tf.gather(char_splits, text)) < MAX_MARKERS

    # Pieces of each text: segment, marker, segment, ..., segment, then an empty piece (what pads a join),
    # cut from "text + marker".
    text_base = chars.byte_splits[:-1]
    position = tf.boolean_mask(chars.char_start - tf.gather(text_base, text), mark)
    k = tf.math.unsorted_segment_sum(tf.cast(mark, tf.int32), text, n_texts)
    length = chars.byte_splits[1:] - text_base
    mark_splits = tf.concat([[0], tf.cumsum(k)], 0)
    pair = lambda x, y: tf.reshape(tf.stack([x, y], 1), [-1])  # noqa: E731
    zeros = tf.zeros_like(length)
    with_marker = _join(tf.reshape(_cut(strings, pair(zeros, zeros), pair(length, zeros), tf.range(n_texts + 1) * 2),
                                   [-1, 2]), marker)
    piece_splits = tf.concat([[0], tf.cumsum(2 * k + 2)], 0)
    owner = row_ids(piece_splits)
    local = tf.range(piece_splits[-1]) - tf.gather(piece_splits, owner)
    own_k, own_length = tf.gather(k, owner), tf.gather(length, owner)
    positions = tf.concat([position, [0]], 0)

    def bound(j):  # the j-th cut of a text: 0, its markers' places, its end
        inner = tf.gather(positions, tf.clip_by_value(tf.gather(mark_splits, owner) + j - 1, 0, tf.size(position)))
        return tf.where(tf.equal(j, 0), 0, tf.where(j > own_k, own_length, inner))

    segment, empty = tf.equal(local % 2, 0) & (local <= 2 * own_k), tf.equal(local, 2 * own_k + 1)
    starts = tf.where(segment, bound(local // 2), tf.where(empty, 0, own_length))
    ends = tf.where(segment, bound(local // 2 + 1), tf.where(empty, 0, own_length + len(marker.encode())))
    pieces = _cut(with_marker, starts, ends, piece_splits)

    # Join each text's pieces, BRANCH at a time (the text's empty piece pads), until one is left.
    counts = 2 * k + 1  # each text's pieces, but its empty one
    for _ in range(ROUNDS):
        groups = (counts + BRANCH - 1) // BRANCH
        group_splits = tf.concat([[0], tf.cumsum(groups + 1)], 0)
        owner = row_ids(group_splits)
        slot = (tf.range(group_splits[-1]) - tf.gather(group_splits, owner))[:, None] * BRANCH + tf.range(BRANCH)
        base, count = tf.gather(piece_splits, owner)[:, None], tf.gather(counts, owner)[:, None]
        pieces = _join(tf.gather(pieces, base + tf.where(slot < count, slot, count)), "")
        counts, piece_splits = groups, group_splits
    out = tf.gather(pieces, piece_splits[:-1])
    return (out, tf.RaggedTensor.from_row_splits(mark, char_splits, validate=False)) if with_marks else out


def row_ids(splits):
    """Each value's row, from int32 row splits: a cumulative count of row starts (value_rowids builds ~40 ops)."""
    starts = splits[:-1]
    return tf.cumsum(tf.math.unsorted_segment_sum(tf.ones_like(starts), starts, splits[-1] + 1))[:-1] - 1


def _cut(strings, starts, ends, splits):
    """The byte ranges [starts, ends) of strings (row `splits` of them each), flat: tf-text's ByteSplitByOffsets."""
    from tensorflow_text.python.ops.byte_splitter import gen_byte_splitter

    return gen_byte_splitter.tf_text_byte_split_by_offsets(strings, starts, ends, tf.cast(splits, tf.int64))[0]


def _join(rows, separator: str):
    """Each row of a 2-D string tensor joined with `separator`: tf-text's ngrams op, which TFLite runs
    (NgramsStringJoin); on ragged rows, because its TF kernel's dense path corrupts memory on strings
    over ~22 bytes (tensorflow-text 2.21.1)."""
    from tensorflow_text.python.ops.ngrams_op import gen_ngrams_op

    width = rows.shape[1]
    splits = tf.range(tf.shape(rows, tf.int64)[0] + 1) * width
    return gen_ngrams_op.tf_text_ngrams_string_join(input_values=tf.reshape(rows, [-1]), input_row_splits=[splits],
                                                    width=width, axis=-1, string_separator=separator)[0]
