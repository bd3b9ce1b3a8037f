"""question_answering: the best answer span in TF, for the exports' text signature (question and context
strings in, the answer's characters and score out: what a phone needs).

Transformers 4.57's QuestionAnsweringPipeline decoding (kzoo.pipelines.question_answering runs it in
Python) on one window: softmax over the context tokens and <cls>, spans of at most `max_answer_len`
tokens scored start * end, its 12 best (top_k * 2 + 10) aligned to words and merged where they give the
same characters, the best kept. Transformers also merges equal answer texts found at different places
(case-insensitive), which strings in a TFLite graph cannot compare; the signature keeps them apart.
XLM's (a Python tokenizer: Transformers' slow path): the context tokens but special ones and the `</s>`
after the question are allowed, spans are whole words (the tokenizer gives each context token its word's
characters) and are not merged. Built from builtin TFLite ops only.
"""

from __future__ import annotations

OPTIONS = {"max_answer_len": 15}  # the text signature's: the longest answer, in tokens (Transformers' default)
CANDIDATES = 12  # spans looked at before word alignment: Transformers' top_k * 2 + 10 for top_k 1


def best_span(start_logits, end_logits, allowed, desired, word_offsets, max_answer_len, merge=True):
    """(score, start, end, null_score) [B] of the best answer: its characters in the context (the words
    holding its first and last token) and Transformers' score; null_score: the "no answer" score that
    handle_impossible_answer compares it with (the first token as start and end). allowed [B, S]: the
    positions the softmax takes (Transformers' p_mask 0); desired: those an answer may start and end on;
    merge: candidates giving the same characters add up (the fast path's)."""
    import tensorflow as tf

    length = tf.shape(start_logits)[1]
    position = tf.range(length)
    allowed = tf.cast(allowed, start_logits.dtype)
    start, end = _masked_softmax(start_logits, allowed), _masked_softmax(end_logits, allowed)
    null_score = start[:, 0] * end[:, 0]
    first = tf.cast(tf.not_equal(position, 0), start.dtype)[None, :]
    start, end = start * first, end * first  # then <cls> is no answer's start or end
    offset = position[None, :] - position[:, None]  # end - start
    band = tf.cast((offset >= 0) & (offset < max_answer_len), start.dtype)  # numpy's triu, then tril
    scores = tf.expand_dims(start, 2) * tf.expand_dims(end, 1) * band[None]  # [B, S, S]
    k = tf.minimum(CANDIDATES, length * length)
    top_scores, top = tf.math.top_k(tf.reshape(scores, [tf.shape(scores)[0], -1]), k)  # [B, K]
    s, e = top // length, top % length
    desired = tf.gather(desired, s, batch_dims=1) & tf.gather(desired, e, batch_dims=1)
    chars_start = tf.gather(word_offsets[:, :, 0], s, batch_dims=1)
    chars_end = tf.gather(word_offsets[:, :, 1], e, batch_dims=1)
    # candidates giving the same characters merge into the first (best) of them, their scores summed
    same = (tf.equal(tf.expand_dims(chars_start, 2), tf.expand_dims(chars_start, 1))
            & tf.equal(tf.expand_dims(chars_end, 2), tf.expand_dims(chars_end, 1))
            & tf.expand_dims(desired, 1) & tf.expand_dims(desired, 2))  # [B, K, K]
    if not merge:
        same &= tf.expand_dims(tf.equal(tf.expand_dims(tf.range(k), 1), tf.expand_dims(tf.range(k), 0)), 0)
    merged = tf.reduce_sum(tf.where(same, tf.expand_dims(top_scores, 1), 0.0), axis=2)
    earlier = tf.range(k)[None, :] < tf.range(k)[:, None]  # [K, K]: j before i
    first_of_group = desired & ~tf.reduce_any(same & earlier[None], axis=2)
    ranked = tf.where(first_of_group, merged, -1.0)
    best = tf.argmax(ranked, axis=1, output_type=tf.int32)
    pick = lambda x: tf.gather(x, best, batch_dims=1)  # noqa: E731
    found = pick(ranked) >= 0
    return (tf.where(found, pick(merged), 0.0), tf.where(found, pick(chars_start), 0),
            tf.where(found, pick(chars_end), 0), null_score)


def _masked_softmax(logits, allowed):
    """Softmax over the allowed positions, the others 0: Transformers' -10000 logits, whose exp is 0. Written
    without a select of -10000 (int8 TFLite gives a select's inputs its output's scale: the logits would
    round to 0); the shift by the row's max cancels out."""
    import tensorflow as tf

    weights = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True)) * allowed
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)


def text_signature(model, config, tokenizer, max_answer_len=OPTIONS["max_answer_len"]):
    """`(numeric, strings)` (see kzoo.tasks.fill_mask) for inputs `question`, `context`:
    numeric(batch): start_logits, end_logits [B, S] (and token_ids, padding_mask);
    strings(out), with the tokenizer's sequence_ids and word_offsets: score, start, end [B] (the answer is
    context[start:end]; 0, 0 and score 0 when no span lies in the context) and null_score [B] (an answer
    scoring below it is Transformers' handle_impossible_answer's ""), plus offset_mapping."""
    import tensorflow as tf

    from kzoo.models import outputs

    fast = tokenizer.is_fast
    specials = sorted(set(tokenizer.all_special_ids)) if not fast else []

    def numeric(batch):
        return {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"], **outputs(model, batch)}

    def strings(out):
        sequence_ids, word_offsets = out.pop("sequence_ids"), out.pop("word_offsets")
        context = tf.equal(sequence_ids, 1)
        position = tf.range(tf.shape(context)[1])[None, :]
        if fast:  # the context and <cls>
            allowed, desired = context | tf.equal(position, 0), context
        else:  # the context but special tokens, and the `</s>` after the question (Transformers' cls_token)
            ids = out["token_ids"]
            special = tf.reduce_any(tf.equal(tf.expand_dims(ids, -1), tf.constant(specials, ids.dtype)), -1)
            first_context = tf.argmax(tf.cast(context, tf.int32), axis=1, output_type=tf.int32)[:, None]
            desired = context & ~special
            allowed = desired | tf.equal(position, first_context - 1)
        out["score"], out["start"], out["end"], out["null_score"] = best_span(
            out["start_logits"], out["end_logits"], allowed, desired, word_offsets, max_answer_len, merge=fast)
        return out

    return numeric, strings
