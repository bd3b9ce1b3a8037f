"""sentence-embedding: a sentence-transformers model's `encode`, on a converted sentence-transformers dir."""

from __future__ import annotations

import numpy as np

from kzoo.pipelines.base import Pipeline, PipelineError, batch_size_of, chunks


class SentenceEmbeddings(Pipeline):
    """`SentenceEmbeddings(model)(texts)` == `SentenceTransformer(dir).encode(texts)`: float32 [N, D] for a list,
    [D] for a str. Texts are cut to the model's max_seq_length (its sentence-transformers config), as
    sentence-transformers cuts them. normalize_embeddings: L2-normalise (on top of a Normalize module);
    prompt: a string put before every text (sentence-transformers' `prompt=`, e.g. "query: " for e5);
    batch_size: texts per model call (32)."""

    name = "sentence-embedding"
    OPTIONS = ("normalize_embeddings", "prompt", "batch_size", "lang")

    def __call__(self, sentences, **options):
        options = self._options(options)
        single, texts = self._texts(sentences)
        prompt = options.get("prompt")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise PipelineError(f"prompt must be a str, got {type(prompt).__name__}")
            texts = [prompt + t for t in texts]
        batch_size = batch_size_of(options)
        longest = self.runner.limits()[1]
        limit = self.runner.config.get("max_seq_length")
        max_length = min(n for n in (limit, longest) if n) if (limit or longest) else None
        cut = {"max_length": max_length, "truncation": True} if max_length else {}
        lang = options.get("lang")
        vectors = []
        for chunk in chunks(texts, batch_size):
            if self.text_only:  # (its text signature cuts at the export's --max-length: max_seq_length by default)
                out = self._run_text(chunk, lang, truncation=True, needs="sentence_embedding")
            else:
                out = self.runner(self.tokenizer(chunk, **cut) if lang is None else self._with_lang(chunk, lang, cut))
            vectors.append(np.asarray(out["sentence_embedding"], np.float32))
        embeddings = np.concatenate(vectors)
        if options.get("normalize_embeddings"):
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        return embeddings[0] if single else embeddings
