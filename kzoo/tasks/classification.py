"""classifier, token_classifier: scores and labels in TF, for the exports' text signature."""

from __future__ import annotations


def label_names(config, num_classes):
    """The config's label names by id (Transformers' id2label), LABEL_i where it names none."""
    labels = config.get("labels") or {}
    return [str(labels.get(str(i), labels.get(i, f"LABEL_{i}"))) for i in range(num_classes)]


def text_signature(model, config, tokenizer):
    """`(numeric, strings)` (see kzoo.tasks.fill_mask): logits [B, C], scores [B, C] (softmax), label_ids
    [B] int32, then labels [B] (the config's label names); per token for a token classifier ([B, S, C],
    [B, S]: padding positions too, `padding_mask` says which are tokens), and then each token's characters
    in the text, offset_mapping [B, S, 2] ((0, 0) for special tokens and padding), and its word's,
    word_offsets [B, S, 2]."""
    import tensorflow as tf

    from kzoo.models import outputs

    names = label_names(config, int(model.output.shape[-1]))

    def numeric(batch):
        logits = outputs(model, batch)["logits"]
        return {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"],
                "logits": logits, "scores": tf.nn.softmax(logits), "label_ids": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    def strings(out):  # (a token classifier's: with the tokenizer's offset_mapping and word_offsets)
        out.pop("sequence_ids", None)
        out["labels"] = tf.gather(tf.constant(names), out["label_ids"])
        return out

    return numeric, strings
