"""sentence-embedding: a sentence-transformers model's `encode`, on a converted sentence-transformers dir."""

from __future__ import annotations

import collections.abc

import numpy as np

from kzoo.pipelines.base import Pipeline, PipelineError, batch_size_of, chunks

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings")


class SentenceEmbeddings(Pipeline):
    """`SentenceEmbeddings(model)(texts)` == `SentenceTransformer(dir).encode(texts)`: float32 [N, D] for a list
    (an iterator is read whole, as encode reads it; [] gives an empty array), [D] for a str. Texts are cut to the
    model's max_seq_length (its sentence-transformers config), as sentence-transformers cuts them.
    encode's arguments: prompt (a string put before every text, e.g. "query: " for e5) or prompt_name (one of the
    model's prompts; neither: its default_prompt_name's, if it has one); batch_size (32); show_progress_bar;
    output_value "sentence_embedding" or "token_embeddings" (a list of [tokens, H] arrays; model dirs and backbone
    exports only); precision float32 / int8 / uint8 / binary / ubinary (sentence-transformers' quantize_embeddings:
    int8 ranges from these embeddings); convert_to_numpy (False: a list of vectors); convert_to_tensor (one
    tf.Tensor); normalize_embeddings (L2, after truncate_dim); truncate_dim (Matryoshka: the first dims). lang: XLM's.
    """

    name = "sentence-embedding"
    OPTIONS = ("prompt_name", "prompt", "batch_size", "show_progress_bar", "output_value", "precision",
               "convert_to_numpy", "convert_to_tensor", "normalize_embeddings", "truncate_dim", "lang")
    streams = False  # (encode reads an iterator whole and returns one array)

    def __call__(self, sentences, **options):
        options = self._options(options)
        if isinstance(sentences, (collections.abc.Iterator, np.ndarray)):
            sentences = list(sentences.tolist() if isinstance(sentences, np.ndarray) else sentences)
        output_value = options.get("output_value", "sentence_embedding")
        if output_value not in OUTPUT_VALUES:
            raise PipelineError(f"output_value must be one of {', '.join(OUTPUT_VALUES)}, not {output_value!r}")
        precision = options.get("precision") or "float32"
        if precision not in PRECISIONS:
            raise PipelineError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        truncate_dim = options.get("truncate_dim")
        if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                         or truncate_dim < 1):
            raise PipelineError(f"truncate_dim must be an int >= 1 or None, got {truncate_dim!r}")
        batch_size = batch_size_of(options)
        if isinstance(sentences, (list, tuple)) and not sentences:  # (encode([]): an empty array)
            return np.array([], np.float32)
        single, texts = self._texts(sentences)
        prompt = self._prompt(options.get("prompt"), options.get("prompt_name"))
        if prompt:
            texts = [prompt + t for t in texts]
        parts = chunks(texts, batch_size)
        if options.get("show_progress_bar"):
            from rich.console import Console
            from rich.progress import track

            parts = track(parts, description="Batches", console=Console(stderr=True))
        found = [self._embed(chunk, options.get("lang"), output_value) for chunk in parts]
        if output_value == "token_embeddings":  # (sentence-transformers: never normalised or stacked)
            embeddings = [vectors for part in found for vectors in part]
            if precision != "float32":  # (one set of ranges for all of them)
                embeddings = quantize(embeddings, precision)
            return embeddings[0] if single else embeddings
        embeddings = np.concatenate(found)[:, :truncate_dim]
        if options.get("normalize_embeddings"):
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        if precision != "float32":
            embeddings = quantize(embeddings, precision)
        if options.get("convert_to_tensor"):
            import tensorflow as tf

            embeddings = tf.convert_to_tensor(embeddings)
        elif not options.get("convert_to_numpy", True):
            embeddings = list(embeddings)
        return embeddings[0] if single else embeddings

    def _prompt(self, prompt, prompt_name):
        """sentence-transformers' _resolve_prompt: `prompt`, else the named prompt, else the default one's."""
        prompts = {"query": "", "document": "", **(self.runner.config.get("prompts") or {})}  # (its defaults)
        if prompt is not None:
            if not isinstance(prompt, str):
                raise PipelineError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise PipelineError(f"Prompt name {prompt_name!r} not found in the configured prompts dictionary "
                                    f"with keys {list(prompts)!r}.")
            return prompts[prompt_name]
        return prompts.get(self.runner.config.get("default_prompt_name"))

    def _embed(self, texts, lang, output_value):
        """sentence_embedding [B, D] float32, or token_embeddings: per text its [tokens, H] (padding cut)."""
        if self.text_only:  # (its text signature cuts at the export's --max-length: max_seq_length by default)
            out = self._run_text(texts, lang, truncation=True, needs=output_value.replace(
                "token_embeddings", "sequence_output"))
            batch = out
        else:
            longest = self.runner.limits()[1]
            limit = self.runner.config.get("max_seq_length")
            max_length = min(n for n in (limit, longest) if n) if (limit or longest) else None
            cut = {"max_length": max_length, "truncation": True} if max_length else {}
            batch = self.tokenizer(texts, **cut) if lang is None else self._with_lang(texts, lang, cut)
            out = self.runner(batch) if output_value == "sentence_embedding" else self.runner.backbone_outputs(batch)
        if output_value == "sentence_embedding":
            return np.asarray(out["sentence_embedding"], np.float32)
        mask = np.asarray(batch["padding_mask"])
        return [np.asarray(out["sequence_output"][row][:int(np.flatnonzero(mask[row]).max(initial=0)) + 1],
                           np.float32) for row in range(len(texts))]


def quantize(embeddings, precision, ranges=None):
    """sentence-transformers' quantize_embeddings: int8 / uint8 in 256 buckets per dimension between these
    embeddings' own min and max (with one vector: an error, as there); binary / ubinary: one bit per dimension
    (> 0), packed, int8 (-128) or uint8. A list of [tokens, H] arrays: each quantized, on the ranges of all."""
    if isinstance(embeddings, list):
        every = np.concatenate(embeddings)
        ranges = every.min(axis=0), every.max(axis=0)
        return [quantize(e, precision, ranges) for e in embeddings]
    if precision.endswith("int8"):
        if ranges is None and len(embeddings) < 2:
            raise PipelineError(f"precision={precision!r} needs at least 2 embeddings to take its ranges from "
                                "(sentence-transformers: \"Cannot compute ranges from a single embedding\")")
        starts, ends = ranges or (embeddings.min(axis=0), embeddings.max(axis=0))
        steps = (ends - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    bits = np.packbits(embeddings > 0, axis=-1)
    return bits if precision == "ubinary" else (bits - 128).astype(np.int8)
