"""The special tokens, truncation and padding of a tokenizer's ids inside a TF graph (`tf_encode`), as
kzoo.tokenizers.base does them in Python: gathers and selects only, so it converts to TFLite."""

from __future__ import annotations

import tensorflow as tf

from kzoo.errors import TokenizerError


def check_pairs(strings, pairs):
    """A clear error for `tf_encode` given texts and pairs of different counts where their shapes say so
    (eagerly, or static in a trace); else the gathers fail deep inside. Serving signatures check their own."""
    if pairs is None:
        return
    a, b = (tf.convert_to_tensor(x, tf.string).shape for x in (strings, pairs))
    if a.rank == 1 and b.rank == 1 and None not in (a[0], b[0]) and a[0] != b[0]:
        raise TokenizerError(f"tf_encode: {a[0]} texts but {b[0]} pairs (one pair per text)")


def assemble(tokenizer, tokens, sequence_length, truncation):
    """One text's (or a pair's) ragged token ids -> (`tokenizer`'s template around them: tf_encode's outputs, `place(values, filler)` putting
    per-token values [batch, (tokens)] of each text where its tokens went, sequence_ids)."""
    length, pair = int(sequence_length), len(tokens) > 1
    special = tokenizer.num_special_tokens_to_add(pair)
    if length < special + pair:
        raise ValueError(f"sequence_length must be at least {special + pair} (room for the special tokens)")
    counts = [tf.cast(part.row_lengths(), tf.int32) for part in tokens]
    room = length - special
    if not pair:
        a, b = tf.minimum(counts[0], room), tf.zeros_like(counts[0])
    elif truncation == "longest_first":
        a, b = (longest_first_python if tokenizer.python_truncation else longest_first)(counts[0], counts[1], room)
    else:
        a = tf.minimum(counts[0], room - 1)
        b = tf.minimum(counts[1], room - a)
    truncated = (counts[0] > a) | ((counts[1] > b) if pair else False)
    middle = 0 if not pair else 1 if tokenizer.template == "bert" else 2  # separators between A and B
    a, b = a[:, None], b[:, None]  # [B, 1]
    p = tf.range(length, dtype=tf.int32)[None, :]  # [1, L]
    in_a = (p >= 1) & (p <= a)
    b_start = a + middle + 1
    in_b = (p >= b_start) & (p < b_start + b)
    total = b_start + b + 1 if pair else a + 2

    def place(values, filler):  # each text's per-token values at its tokens' positions, `filler` elsewhere
        dense = lambda x: x.to_tensor(default_value=0, shape=[None, length])  # noqa: E731
        out = tf.where(in_a, tf.gather(dense(values[0]), tf.maximum(p - 1 + 0 * a, 0), batch_dims=1), filler)
        if pair:
            out = tf.where(in_b, tf.gather(dense(values[1]), tf.maximum(p - b_start, 0), batch_dims=1), out)
        return out

    ids = tf.where(tf.equal(p, 0), tokenizer.cls_token_id, tf.where(p < total, tokenizer.sep_token_id, tokenizer.pad_token_id))
    ids = place(tokens, ids)  # (what is neither A nor B before `total`: separators)
    second = (p >= b_start) & (p < total) & tf.constant(pair and tokenizer.template == "bert")
    out = {"token_ids": ids, "padding_mask": tf.cast(p < total, tf.int32), "segment_ids": tf.cast(second, tf.int32),
           "truncated": tf.cast(truncated, tf.int32)}
    return out, place, tf.where(in_a, 0, tf.where(in_b, 1, -1))


def longest_first(a, b, room):
    """The tokenizers library's "longest_first" lengths of a pair cut to `room` tokens (as
    kzoo.tokenizers.base.longest_first, on [batch] counts)."""
    shorter = tf.minimum(a, b)
    long_keep = tf.where(shorter > room, shorter, tf.maximum(shorter, room - shorter))
    halves = shorter + long_keep > room
    short_keep = tf.where(halves, room // 2, shorter)
    long_keep = tf.where(halves, room // 2 + room % 2, long_keep)
    over = a + b > room
    a_keep = tf.minimum(a, tf.where(a > b, long_keep, short_keep))
    b_keep = tf.minimum(b, tf.where(a > b, short_keep, long_keep))
    return tf.where(over, a_keep, a), tf.where(over, b_keep, b)


def longest_first_python(a, b, room):
    """Transformers' Python tokenizers' "longest_first" lengths of a pair cut to `room` tokens (as
    kzoo.tokenizers.base.longest_first_python, on [batch] counts)."""
    remove = tf.maximum(a + b - room, 0)
    first = tf.minimum(tf.abs(b - a), remove)
    second = remove - first
    cut_a = tf.where(a > b, first + second // 2, second // 2)
    cut_b = tf.where(a > b, second - second // 2, first + second - second // 2)
    return a - cut_a, b - cut_b
