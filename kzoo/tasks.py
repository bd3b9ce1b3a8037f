"""Task pipelines on a kzoo model dir: fill-mask and feature extraction.

Output formats follow Transformers' pipelines, so code written against
`pipeline("fill-mask")` reads kzoo's results unchanged.
"""

from __future__ import annotations

import numpy as np

from kzoo import modeldir
from kzoo.errors import KzooError


class PipelineError(KzooError, ValueError):
    """A one-line, user-facing problem with a pipeline's input."""


def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


class _Pipeline:
    def __init__(self, model, tokenizer=None):
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            from kzoo import runtime

            path = model
            # A model dir loads as its Keras model; a SavedModel dir or a .tflite file as a
            # kzoo.runtime Runner, whose tokenizer is the copy `kzoo export` stores with it.
            model = runtime.load_model(path)
            if tokenizer is None:
                tokenizer = runtime.tokenizer_dir(path)
        if isinstance(tokenizer, (str, bytes)) or hasattr(tokenizer, "__fspath__"):
            tokenizer = load_tokenizer(tokenizer)  # a model dir (or an export's stored copy)
        if tokenizer is None:
            raise PipelineError("a tokenizer is needed: pass tokenizer=, or a model dir that has one")
        self.model = model
        self.tokenizer = tokenizer
        self.task = getattr(model, "kzoo_config", {}).get("task")

    def _batch(self, texts, lang=None):
        """The tokenizer's batch. lang: an XLM language code (its id at every position); None:
        no language ids, as Transformers' pipelines call XLM (they never pass `langs`)."""
        if lang is None:
            batch = self.tokenizer(texts)
            if "lang_ids" in batch:
                batch["lang_ids"] = np.full_like(batch["lang_ids"], -1)  # -1: not given
            return batch
        if not getattr(self.tokenizer, "languages", None):
            arch = getattr(self.model, "kzoo_config", {}).get("architecture")
            if arch == "xlm":
                raise PipelineError(f"lang={lang!r}: this XLM model has no languages")
            raise PipelineError(f"lang={lang!r}: {arch or 'this'} models have no languages (lang is for XLM)")
        return self.tokenizer(texts, lang=lang)


class FillMask(_Pipeline):
    """`FillMask(model_dir)("Hello I'm a [MASK] model.", top_k=5)`.

    One mask: a list of `top_k` dicts {score, token, token_str, sequence};
    several masks in one text: one such list per mask; a list of texts: one result each.
    XLM: `lang="fr"` feeds that language's id (None: none, as Transformers' pipeline).
    """

    def __init__(self, model, tokenizer=None):
        super().__init__(model, tokenizer)
        if self.task not in ("masked_lm", "pretraining", None):
            raise PipelineError(f"fill-mask needs a masked-LM model; this one is a {self.task!r} model")
        self._head = None  # the Keras model's masked-LM head, cut out at the first call

    def __call__(self, texts, top_k=5, lang=None):
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if top_k < 1:
            raise PipelineError(f"top_k must be >= 1, got {top_k}")
        mask_id = self.tokenizer.mask_token_id
        batch = self._batch(texts, lang)
        rows, positions = [], []
        for row, text in enumerate(texts):
            ids = batch["token_ids"][row][batch["padding_mask"][row] == 1]
            found = np.flatnonzero(ids == mask_id)
            if found.size == 0:
                raise PipelineError(f"no mask token {self.tokenizer.mask_token} in the input: {text!r}")
            rows.append(np.full(found.size, row))
            positions.append(found)
        logits = self._mask_logits(batch, np.concatenate(rows), np.concatenate(positions))
        logits = np.split(logits, np.cumsum([p.size for p in positions])[:-1])
        results = []
        for row, (found, row_logits) in enumerate(zip(positions, logits)):
            ids = batch["token_ids"][row][batch["padding_mask"][row] == 1]
            probs = _softmax(np.asarray(row_logits, dtype=np.float32))
            single_mask = found.size == 1
            per_mask = []
            for pos, p in zip(found, probs):
                best = np.argsort(-p, kind="stable")[: min(top_k, p.size)]
                candidates = []
                for token in best:
                    filled = ids.copy()
                    filled[pos] = token
                    candidates.append({
                        "score": float(p[token]),
                        "token": int(token),
                        "token_str": self.tokenizer.decode([int(token)]),
                        "sequence": self.tokenizer.decode(filled.tolist(), skip_special_tokens=single_mask),
                    })
                per_mask.append(candidates)
            results.append(per_mask[0] if single_mask else per_mask)
        return results[0] if single else results

    def _mask_logits(self, batch, rows, positions):
        """Logits [N, V] at the (row, position) pairs. A Keras model runs its head at those rows only
        (XLM-R's logits at every position: 1 GB for 8 texts of 128 tokens); an export's
        serving_default gives every position."""
        import keras

        if isinstance(self.model, keras.Model) and hasattr(self.model, "backbone"):
            from kzoo.layers import masked_lm_head

            if self._head is None:
                self._head = masked_lm_head(self.model)
            sequence = self.model.backbone.predict_on_batch(batch)["sequence_output"]
            return np.asarray(self._head.predict_on_batch(np.asarray(sequence)[rows, positions][None]))[0]
        out = self.model.predict_on_batch(batch)
        logits = out["mlm_logits"] if isinstance(out, dict) else out
        return np.asarray(logits)[rows, positions]


class Features(_Pipeline):
    """`Features(model_dir)(texts)`: per text, `sequence_output` [tokens, H] (padding
    removed) and `pooled_output` [H] when the model has a pooler. XLM: `lang` as in FillMask."""

    def __call__(self, texts, lang=None):
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        batch = self._batch(texts, lang)
        backbone = getattr(self.model, "backbone", self.model)
        out = backbone.predict_on_batch(batch)
        if not isinstance(out, dict) or "sequence_output" not in out:
            raise PipelineError("features need a backbone's sequence_output; this export has only its head's "
                                "outputs (export the model dir converted with --task backbone)")
        results = []
        for row in range(len(texts)):
            keep = batch["padding_mask"][row] == 1
            item = {"tokens": self.tokenizer.convert_ids_to_tokens(batch["token_ids"][row][keep].tolist()),
                    "sequence_output": np.asarray(out["sequence_output"][row][keep])}
            if "pooled_output" in out:
                item["pooled_output"] = np.asarray(out["pooled_output"][row])
            results.append(item)
        return results[0] if single else results


TASKS = {"fill-mask": FillMask, "features": Features, "embed": Features}


def pipeline(task, model, tokenizer=None):
    if task in ("text-generation", "generate"):  # XLM only; kzoo.generation.Generator
        from kzoo.generation import Generator

        return Generator(model, tokenizer)
    if task not in TASKS:
        raise PipelineError(f"unknown task {task!r}; kzoo has {sorted(TASKS)}")
    return TASKS[task](model, tokenizer)


def load_tokenizer(path):
    """The tokenizer saved in a model dir: SentencePiece (ALBERT, XLM-R) or Moses + BPE (XLM)."""
    import json
    from pathlib import Path

    meta = Path(path) / "kzoo_tokenizer.json"
    if not meta.is_file():
        raise PipelineError(f"{path}: no tokenizer (kzoo_tokenizer.json); the checkpoint it was converted "
                            "from had no tokenizer files")
    if json.loads(meta.read_text()).get("family") == "xlm":
        from kzoo.xlm_tokenizer import XLMTokenizer

        return XLMTokenizer.load(path)
    from kzoo.tokenizer import SentencePieceTokenizer

    return SentencePieceTokenizer.load(path)
