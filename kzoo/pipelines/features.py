"""Features: the backbone's outputs per token (and pooled), on any model dir or backbone export."""

from __future__ import annotations

import numpy as np

from kzoo.pipelines.base import Pipeline


class Features(Pipeline):
    """`Features(model)(texts)`: per text, `tokens`, `sequence_output` [tokens, H] (padding removed)
    and `pooled_output` [H] when the model has a pooler. XLM: `lang`, and `truncation`, as in FillMask
    (at construction or at call)."""

    name = "features"
    OPTIONS = ("lang", "truncation")

    def __call__(self, texts, **options):
        options = self._options(options)
        lang, truncation = options.get("lang"), options.get("truncation", False)
        single, texts = self._texts(texts)
        if self.text_only:
            batch = out = self._run_text(texts, lang, truncation, needs="sequence_output")
        else:
            batch = self._batch(texts, lang, truncation)
            out = self.runner.backbone_outputs(batch)
        results = []
        for row in range(len(texts)):
            keep = batch["padding_mask"][row] == 1
            item = {"tokens": self.tokenizer.convert_ids_to_tokens(batch["token_ids"][row][keep].tolist()),
                    "sequence_output": np.asarray(out["sequence_output"][row][keep])}
            if "pooled_output" in out:
                item["pooled_output"] = np.asarray(out["pooled_output"][row])
            results.append(item)
        return results[0] if single else results
