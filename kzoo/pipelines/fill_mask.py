"""fill-mask, in Transformers' output format: code written against `pipeline("fill-mask")` reads
kzoo's results unchanged."""

from __future__ import annotations

import numpy as np

from kzoo.pipelines.base import Pipeline, PipelineError
from kzoo.tasks.fill_mask import mask_slots, top_predictions


class FillMask(Pipeline):
    """`FillMask(model)("Hello I'm a [MASK] model.", top_k=5)`.

    One mask: a list of `top_k` dicts {score, token, token_str, sequence};
    several masks in one text: one such list per mask; a list of texts: one result each.
    XLM: `lang="fr"` feeds that language's id (None: none, as Transformers' pipeline).
    truncation: cut texts longer than the model takes (Transformers' default: a text too long fails).
    """

    name = "fill-mask"

    def __call__(self, texts, top_k=5, lang=None, truncation=False):
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if top_k < 1:
            raise PipelineError(f"top_k must be >= 1, got {top_k}")
        batch = self._batch(texts, lang, truncation)
        ids, mask = batch["token_ids"], batch["padding_mask"]
        mask_id = self.tokenizer.mask_token_id
        counts = np.sum((ids == mask_id) & (mask == 1), axis=1)
        for text, count in zip(texts, counts):
            if count == 0:
                cut = " (it was cut off: truncation)" if truncation and self.tokenizer.mask_token in text else ""
                raise PipelineError(f"no mask token {self.tokenizer.mask_token} in the input{cut}: {text[:200]!r}")
        positions, found = mask_slots(ids, mask, mask_id, int(counts.max()))
        (logits,) = self.runner(batch, positions=positions.numpy()).values()  # [B, M, V]
        top_ids, top_scores = top_predictions(logits, found, min(top_k, logits.shape[-1]))
        results = [self._format(ids[row], mask[row] == 1, positions[row, :count].numpy(), top_ids[row].numpy(),
                                top_scores[row].numpy())
                   for row, count in enumerate(counts)]
        return results[0] if single else results

    def _format(self, ids, real, positions, top_ids, top_scores):
        """One text's results: per mask, the candidates with the sequence each one fills in (ids: the
        padded row, `real` its non-padding positions)."""
        single_mask = len(positions) == 1
        per_mask = []
        for pos, best, scores in zip(positions, top_ids, top_scores):
            candidates = []
            for token, score in zip(best.tolist(), scores.tolist()):
                filled = ids.copy()
                filled[pos] = token
                filled = filled[real]
                candidates.append({
                    "score": float(score),
                    "token": int(token),
                    "token_str": self.tokenizer.decode([int(token)]),
                    "sequence": self.tokenizer.decode(filled.tolist(), skip_special_tokens=single_mask),
                })
            per_mask.append(candidates)
        return per_mask[0] if single_mask else per_mask
