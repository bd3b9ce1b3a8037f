"""fill-mask (masked_lm, pretraining): the mask positions and the top predictions at them, in TF.

One implementation serves the fill-mask pipeline (kzoo.pipelines.fill_mask, on any runner) and the
exports' text signature (`text_signature`, inside a SavedModel or a .tflite). Built from builtin
TFLite ops only (expand_dims, not [:, None]; no string selects).
"""

from __future__ import annotations

OPTIONS = {"top_k": 5, "max_masks": 4}  # the text signature's: predictions per mask, masks per text


def mask_slots(token_ids, padding_mask, mask_id, max_masks):
    """The first `max_masks` mask tokens of each row: positions [B, M] int32 (0 for an unused slot)
    and found [B, M] bool."""
    import tensorflow as tf

    is_mask = tf.logical_and(tf.equal(token_ids, mask_id), tf.equal(padding_mask, 1))  # [B, S]
    rank = tf.cumsum(tf.cast(is_mask, tf.int32), axis=1) - 1  # index among the masks
    slots = tf.reshape(tf.range(max_masks, dtype=tf.int32), [1, max_masks, 1])
    hit = tf.logical_and(tf.equal(tf.expand_dims(rank, 1), slots), tf.expand_dims(is_mask, 1))  # [B, M, S]
    found = tf.reduce_any(hit, axis=2)
    return tf.argmax(tf.cast(hit, tf.int32), axis=2, output_type=tf.int32), found


def top_predictions(logits, found, k, targets=None):
    """Softmax over the vocabulary, its k best: top_ids [B, M, k] int32 (-1 in unused slots) and
    top_scores [B, M, k] (0 in unused slots). Ties: the lower id first, as Transformers' topk.
    targets: ids to choose among (their probabilities over the whole vocabulary, as Transformers)."""
    import tensorflow as tf

    probabilities = tf.nn.softmax(logits)
    if targets is None:
        scores, top = tf.math.top_k(probabilities, k)
    else:
        targets = tf.constant(targets, tf.int32)
        scores, best = tf.math.top_k(tf.gather(probabilities, targets, axis=-1), k)
        top = tf.gather(targets, best)
    used = tf.expand_dims(found, 2)
    return tf.where(used, top, -tf.ones_like(top)), tf.where(used, scores, tf.zeros_like(scores))


def text_signature(model, config, tokenizer, top_k=OPTIONS["top_k"], max_masks=OPTIONS["max_masks"]):
    """`(numeric, strings)`: fill-mask for a text signature, in two halves.

    numeric(batch) -> numbers (XLA-compilable): the backbone, then the masked-LM head at the first
        `max_masks` mask positions only:
        mask_positions [B, M] int32   position in token_ids, -1 for an unused slot
        top_ids        [B, M, K] int32  best `top_k` token ids per mask (-1 for an unused slot)
        top_scores     [B, M, K] float  their softmax probabilities (0 for an unused slot)
        and token_ids, padding_mask [B, S] (the ids the model saw)
    strings(out) -> the same plus top_tokens [B, M, K] (the ids' tokens; "" for unused slots and
        for ids past the tokenizer's vocabulary, as in an embedding padded beyond it).
    """
    import tensorflow as tf

    from kzoo.errors import KzooError
    from kzoo.models.layers import per_position_head

    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise KzooError("fill-mask needs a tokenizer with a mask token")
    vocab = [t or "" for t in tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))]
    k = min(top_k, int(getattr(model.backbone, "vocabulary_size", len(vocab))))
    names = vocab + [""]  # an extra "" for unused slots: TFLite cannot select between strings
    head = per_position_head(model)

    def numeric(batch):
        sequence = model.backbone(batch, training=False)["sequence_output"]
        ids, mask = batch["token_ids"], batch["padding_mask"]
        position, found = mask_slots(ids, mask, mask_id, max_masks)
        (logits,) = head(tf.gather(sequence, position, batch_dims=1), training=False).values()  # [B, M, V]
        top_ids, top_scores = top_predictions(logits, found, k)
        return {"token_ids": ids, "padding_mask": mask, "top_ids": top_ids, "top_scores": top_scores,
                "mask_positions": tf.where(found, position, -tf.ones_like(position))}

    def strings(out):
        ids = out["top_ids"]
        named = tf.logical_and(ids >= 0, ids < len(vocab))
        out["top_tokens"] = tf.gather(tf.constant(names), tf.where(named, ids, tf.fill(tf.shape(ids), len(vocab))))
        return out

    return numeric, strings
