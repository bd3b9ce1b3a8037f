"""fill-mask, in Transformers' output format: code written against `pipeline("fill-mask")` reads
kzoo's results unchanged."""

from __future__ import annotations

import warnings

import numpy as np

from kzoo.pipelines.base import Pipeline, PipelineError, tokenizer_kwargs_of
from kzoo.tasks.fill_mask import mask_slots, top_predictions

TOP_K = 5  # Transformers' default


class FillMask(Pipeline):
    """`FillMask(model)("Hello I'm a [MASK] model.", top_k=5)`.

    One mask: a list of `top_k` dicts {score, token, token_str, sequence};
    several masks in one text: one such list per mask; a list of texts: one result each.
    XLM: `lang="fr"` feeds that language's id (None: none, as Transformers' pipeline).
    truncation: cut texts longer than the model takes (Transformers' default: a text too long fails).
    top_k: 5 by default (Transformers'), or as many as a text-in export gives when it gives fewer.
    targets: a token or list of tokens to score instead of the whole vocabulary (one not in the vocabulary:
    its text's first token, with a warning, as Transformers); tokenizer_kwargs: {max_length, truncation,
    padding} for the tokenizer. Options at construction or at call, as Transformers' pipelines take them.
    """

    name = "fill-mask"
    OPTIONS = ("top_k", "targets", "tokenizer_kwargs", "lang", "truncation")

    def __call__(self, texts, **options):
        options = self._options(options)
        top_k, lang, truncation = options.get("top_k"), options.get("lang"), options.get("truncation", False)
        tokenizer_kwargs = tokenizer_kwargs_of(options.get("tokenizer_kwargs"))
        single, texts = self._texts(texts)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0):
            raise PipelineError(f"top_k must be an int >= 0, got {top_k!r}")
        shown, top_k = top_k, (top_k or None)  # (0: no candidates, as Transformers' topk(0))
        targets = self._target_ids(options["targets"]) if options.get("targets") is not None else None
        if self.text_only and (targets is not None or tokenizer_kwargs):
            raise PipelineError(f"{'targets' if targets is not None else 'tokenizer_kwargs'}: {self.runner.path} "
                                "tokenizes inside and gives its best tokens only; use the model dir or its SavedModel")
        if self.text_only:
            ids, mask, positions, top_ids, top_scores = self._in_model(texts, top_k, lang, truncation)
            counts = self._mask_counts(texts, ids, mask, truncation)
            if counts.max() > positions.shape[1]:
                row = int(np.argmax(counts))
                raise PipelineError(f"text {row + 1} has {counts[row]} masks; {self.runner.path} predicts at most "
                                    f"{positions.shape[1]} per text (export it with --max-masks {counts[row]})")
        else:
            batch = self._batch(texts, lang, truncation, tokenizer_kwargs=tokenizer_kwargs)
            ids, mask = batch["token_ids"], batch["padding_mask"]
            counts = self._mask_counts(texts, ids, mask, truncation or tokenizer_kwargs.get("truncation"))
            positions, found = mask_slots(ids, mask, self.tokenizer.mask_token_id, int(counts.max()))
            (logits,) = self.runner(batch, positions=positions.numpy()).values()  # [B, M, V]
            k = min(top_k or TOP_K, logits.shape[-1] if targets is None else len(targets))
            top_ids, top_scores = top_predictions(logits, found, k, targets)
            positions, top_ids, top_scores = positions.numpy(), top_ids.numpy(), top_scores.numpy()
        results = [self._format(ids[row], mask[row] == 1, positions[row, :count], top_ids[row, :, :shown],
                                top_scores[row, :, :shown]) for row, count in enumerate(counts)]
        return results[0] if single else results

    def _target_ids(self, targets):
        """Transformers' get_target_ids: each target's id, or its text's first token's (warned)."""
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
            raise PipelineError(f"targets must be a str or a list of str, got {targets!r}")
        ids = []
        for target in targets:
            found = self.tokenizer.convert_tokens_to_ids([target])[0]
            if found is None or found == self.tokenizer.unk_token_id and \
                    self.tokenizer.convert_ids_to_tokens([found])[0] != target:
                pieces = self.tokenizer.encode(target, add_special_tokens=False)[:1]
                if not pieces:
                    warnings.warn(f"The specified target token `{target}` does not exist in the model vocabulary. "
                                  "We cannot replace it with anything meaningful, ignoring it", UserWarning)
                    continue
                found = pieces[0]
                warnings.warn(f"The specified target token `{target}` does not exist in the model vocabulary. "
                              f"Replacing with `{self.tokenizer.convert_ids_to_tokens([found])[0]}`.", UserWarning)
            ids.append(int(found))
        ids = list(set(ids))  # (Transformers' order)
        if not ids:
            raise PipelineError("At least one target must be provided when passed.")
        return ids

    def _mask_counts(self, texts, ids, mask, truncation):
        """Masks per text; a PipelineError naming a text that has none."""
        counts = np.sum((ids == self.tokenizer.mask_token_id) & (mask == 1), axis=1)
        for text, count in zip(texts, counts):
            if count == 0:
                cut = " (it was cut off: truncation)" if truncation and self.tokenizer.mask_token in text else ""
                raise PipelineError(f"no mask token {self.tokenizer.mask_token} in the input{cut}: {text[:200]!r}")
        return counts

    def _in_model(self, texts, top_k, lang, truncation):
        """A text-in model's own fill-mask (kzoo.tasks.fill_mask.text_signature): the ids it saw, the mask
        positions, and the best top_k ids and scores per mask."""
        out = self._run_text(texts, lang, truncation, needs="top_ids")
        exported = out["top_ids"].shape[-1]
        if top_k is None:
            top_k = min(TOP_K, exported)
        elif top_k > exported and exported < self.tokenizer.vocab_size:
            raise PipelineError(f"top_k={top_k}: {self.runner.path} gives the best {exported} per mask (export it "
                                f"with --top-k {top_k})")
        return (out["token_ids"], out["padding_mask"], out["mask_positions"], out["top_ids"][..., :top_k],
                out["top_scores"][..., :top_k])

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
