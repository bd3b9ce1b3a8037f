"""`kzoo export savedmodel`: a TensorFlow Serving SavedModel whose signatures run under XLA.

Layout (TensorFlow Serving's model_base_path layout: one numbered version dir):

    OUT/1/saved_model.pb, variables/       the graph and the weights
    OUT/1/assets.extra/kzoo/               config.json + tokenizer files (for kzoo.runtime)
    OUT.report.json                        size, signatures, parity against Keras fp32

Signatures:
    serving_default  token_ids, padding_mask, segment_ids (+ every other input the model declares,
                     e.g. XLM's lang_ids): int32 [None, None] -> the model's outputs. Outside XLA
                     the inputs are padded (masked) up to a power-of-two batch and a length bucket
                     (16, 32, ..., the model's longest), as XLA compiles one program per input
                     shape; the outputs are cut back to the request's shape.
    serve_text       text: string [None] -> the task's output (see `kzoo.export.text_outputs`). The
                     tokenizer (`tf_encode`, tf-text ops) runs outside XLA, the ids are cut to a
                     length bucket (16, 32, ..., the model's longest), then an XLA-compiled function
                     runs the model and the task's head (batch padded as above); token / label
                     strings are looked up last.
                     Only when the model dir has an in-graph tokenizer and a task with a text output.

Loading needs TensorFlow, plus `import tensorflow_text` for serve_text (its ops); never kzoo.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from kzoo.export import (
    BATCH_BUCKETS, EVALUATION_TEXTS, MAX_MASKS, SIDE_DIR, TOP_K, ExportError, bucketed, call_model, check_out,
    compare, copy_sidecar, encode_in_graph, id_batches, input_names, input_signature, length_buckets, load_model,
    load_text_tokenizer, max_tokens, merge_comparisons, text_outputs, variable_holder, with_masks, write_report,
)

VERSION = "1"
BOUND = 1e-4  # max abs diff against Keras fp32 (DESIGN: the XLA path is exact to float rounding)


def export_savedmodel(model_dir, out, *, text=None, top_k=TOP_K, max_masks=MAX_MASKS, overwrite=False,
                      progress=None):
    """Writes a SavedModel at `out/1` and `out.report.json`; returns the report.

    text: add the serve_text signature; None = when the model dir's tokenizer can run in the graph
          and the task has a text output, True = require it, False = ids only.
    progress: optional factory `(total) -> advance(n)` for a progress bar.
    """
    import tensorflow as tf

    from kzoo.modeldir import atomic_dir, atomic_file

    out = Path(out)
    check_out(out, overwrite)
    started = time.time()
    advance = progress(5) if progress else (lambda n=1: None)

    model, config = load_model(model_dir)
    tokenizer = _text_tokenizer(model_dir, config, text)
    longest = max_tokens(model)
    advance()

    # === The functions ===
    signature = input_signature(model)
    holder = variable_holder(model)

    buckets = length_buckets(longest)
    pad_values = {"token_ids": int(getattr(getattr(model, "backbone", model), "pad_token_id", 0) or 0)}
    holder.serving_default_xla = tf.function(lambda inputs: call_model(model, inputs), input_signature=[signature],
                                             jit_compile=True)

    def serving_default(inputs):
        return bucketed(holder.serving_default_xla, inputs, pad_values, buckets)

    holder.serving_default = tf.function(serving_default, input_signature=[signature])
    signatures = {"serving_default": holder.serving_default.get_concrete_function()}
    if tokenizer is not None:
        numeric, strings = text_outputs(model, config, tokenizer, top_k=top_k, max_masks=max_masks)
        compiled = tf.function(numeric, input_signature=[signature], jit_compile=True)

        def serve_text(text):
            batch = encode_in_graph(tokenizer, model, text, longest, buckets)
            return strings(bucketed(compiled, batch, pad_values))

        holder.serve_text_numeric = compiled
        holder.serve_text = tf.function(serve_text, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        signatures["serve_text"] = holder.serve_text.get_concrete_function()
    advance()

    report_path = Path(f"{out}.report.json")
    with contextlib.ExitStack() as stack:
        # The report is renamed into place first and OUT last, so an OUT that exists is complete.
        tmp = stack.enter_context(atomic_dir(out, overwrite=overwrite))
        tmp_report = stack.enter_context(atomic_file(report_path, overwrite=True))
        version = tmp / VERSION
        tf.saved_model.save(holder, str(version), signatures=signatures)
        copy_sidecar(model_dir, version / "assets.extra" / SIDE_DIR)
        advance()

        # === Check what was written, reloaded as a server would, against Keras fp32 ===
        loaded = tf.saved_model.load(str(version))
        evaluation = _evaluate(loaded, model, config, tokenizer, longest, buckets, top_k, max_masks)
        advance()
        files = [f for f in version.rglob("*") if f.is_file()]
        report = {
            "format": "savedmodel",
            "out": str(out),
            "path": str(out / VERSION / "saved_model.pb"),
            "bytes": sum(f.stat().st_size for f in files),
            "architecture": config.get("architecture"),
            "task": config.get("task"),
            "xla": True,
            "signatures": {name: {"inputs": sorted(fn.structured_input_signature[1]),
                                  "outputs": sorted(fn.structured_outputs)}
                           for name, fn in loaded.signatures.items()},
            "max_tokens": longest,
            "length_buckets": buckets,
            "batch_buckets": list(BATCH_BUCKETS),
            "text": tokenizer is not None and {"top_k": top_k, "max_masks": max_masks} or None,
            "evaluation": evaluation,
            "ok": evaluation["ok"],
            "seconds": round(time.time() - started, 1),
        }
        write_report(tmp_report, report)
        advance()
    return report


def _text_tokenizer(model_dir, config, text):
    from kzoo.export import TEXT_TASKS

    if text is False:
        return None
    if text is None:
        try:
            tokenizer = load_text_tokenizer(model_dir)
        except ExportError:
            return None
        return tokenizer if config.get("task") in TEXT_TASKS else None
    return load_text_tokenizer(model_dir)


def _evaluate(loaded, model, config, tokenizer, longest, buckets, top_k, max_masks):
    """serving_default (and serve_text) of the reloaded SavedModel against the Keras model."""
    import tensorflow as tf

    texts = with_masks(EVALUATION_TEXTS, getattr(tokenizer, "mask_token", None)) if tokenizer else EVALUATION_TEXTS
    length = min(longest, 64)
    batches = id_batches(model, tokenizer, texts, batch_size=8, length=length, seed=1)
    # and a shape off the buckets: padded to [4, bucket] in the signature, cut back to [3, 13]
    batches.append({k: v[:3, :13] for k, v in batches[0].items()})
    parts = []
    serve = loaded.signatures["serving_default"]
    for batch in batches:
        ours = {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in batch.items()}).items()}
        want = {k: np.asarray(v) for k, v in call_model(model, batch).items()}
        parts.append(compare(ours, want, batch["padding_mask"]))
    rows = merge_comparisons(parts)
    result = {"against": "keras fp32", "inputs": "text" if tokenizer else "random ids", "bound": BOUND,
              "serving_default": rows}
    ok = all(r["max_abs_diff"] <= BOUND and r["finite"] for r in rows.values())

    if tokenizer is not None:
        numeric, _ = text_outputs(model, config, tokenizer, top_k=top_k, max_masks=max_masks)
        got = {k: v.numpy() for k, v in loaded.signatures["serve_text"](text=tf.constant(texts)).items()}
        # The same ids through the Python tokenizer, padded to the bucket the graph chose.
        width = got["token_ids"].shape[1]
        batch = tokenizer(texts, max_length=longest, truncation=True, padding="max_length")
        batch = {k: np.asarray(v, "int32")[:, :width] for k, v in batch.items()}
        batch = {name: batch.get(name, np.zeros_like(batch["token_ids"])) for name in input_names(model)}
        ids_equal = bool(np.array_equal(got["token_ids"], batch["token_ids"])
                         and np.array_equal(got["padding_mask"], batch["padding_mask"]))
        want = {k: np.asarray(v) for k, v in numeric(batch).items()}
        floats = {k: v for k, v in want.items() if v.dtype.kind == "f"}
        text_rows = compare({k: got[k] for k in floats}, floats, batch["padding_mask"])
        exact = [k for k, v in want.items() if v.dtype.kind != "f"]
        # Integer outputs (top ids, label ids) may differ only where two scores tie within float error.
        agree = {k: float(np.mean(got[k] == want[k])) for k in exact}
        result["serve_text"] = {"texts": len(texts), "bucket": width, "ids_equal_python_tokenizer": ids_equal,
                                "outputs": text_rows, "integer_agreement": agree}
        ok = ok and ids_equal and all(r["max_abs_diff"] <= BOUND and r["finite"] for r in text_rows.values())
    result["ok"] = bool(ok)
    return result
