"""backbone: the encoder's outputs, for the exports' text signature."""

from __future__ import annotations


def text_signature(model, config, tokenizer):
    """`(numeric, strings)` (see kzoo.tasks.fill_mask): sequence_output [B, S, H] and pooled_output
    [B, H] (with a pooler); no strings."""
    from kzoo.models import outputs

    def numeric(batch):
        return {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"], **outputs(model, batch)}

    return numeric, lambda out: out
