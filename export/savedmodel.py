"""`kzoo export savedmodel`: a TensorFlow Serving SavedModel whose signatures run under XLA.

Layout (kzoo.io.layout; TensorFlow Serving's model_base_path layout: one numbered version dir):

    OUT/1/saved_model.pb, variables/       the graph and the weights
    OUT/1/assets.extra/kzoo/               config.json + tokenizer files (for kzoo.runtime)
    OUT.report.json                        size, signatures, parity against Keras fp32

Signatures:
    serving_default  token_ids, padding_mask, segment_ids (+ every other input the model declares,
                     e.g. XLM's lang_ids): int32 [None, None] -> the model's outputs. Outside XLA
                     the inputs are padded (masked) up to a power-of-two batch and a length bucket
                     (16, 32, ..., the model's longest), as XLA compiles one program per input
                     shape; the outputs are cut back to the request's shape.
    serve_text       text: string [None] -> the task's text signature (kzoo.tasks), and truncated [B]
                     (1 where a text had more tokens than --max-length, default the model's longest,
                     and was cut there). The tokenizer (`tf_encode`, tf-text ops) runs outside XLA,
                     the ids are cut to a length bucket, then an XLA-compiled function runs the model
                     and the task's head (batch padded as above); token / label strings are looked up
                     last. Only when the model dir has an in-graph tokenizer and its task a text
                     signature.

Loading needs TensorFlow, plus `import tensorflow_text` for serve_text (its ops); never kzoo.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from kzoo.export import check
from kzoo.export.common import (
    BATCH_BUCKETS, ExportError, bucketed, check_out, check_text_only, ids_function, input_checks, input_signature,
    length_buckets, load_text_tokenizer, max_tokens, model_and_config, pad_values, text_function, text_max_length,
    text_checks, text_options, text_signature, text_specs, variable_holder,
)
from kzoo.export.data import EVALUATION_TEXTS, id_batches, with_masks
from kzoo.io import layout, modeldir
from kzoo.io.atomic import atomic_dir, atomic_file
from kzoo.tasks import TASKS

BOUND = 1e-4  # max abs diff against Keras fp32 (the XLA path is exact to float rounding)


def export_savedmodel(model_dir, out, *, text=None, top_k=None, max_masks=None, max_answer_len=None, max_length=None,
                      overwrite=False, progress=None):
    """Writes a SavedModel at `out/1` and `out.report.json`; returns the report.

    text: add the serve_text signature; None = when the model dir's tokenizer can run in the graph
          and the task has a text signature, True = require it, False = ids only.
    top_k, max_masks: the fill-mask text signature's options, max_answer_len question answering's (None:
          kzoo.tasks' defaults).
    max_length: serve_text's longest input in tokens (None: the model's); longer texts are cut, and its
          `truncated` output says which.
    progress: optional factory `(total) -> advance(n)` for a progress bar.
    """
    import tensorflow as tf

    out = Path(out)
    if out.suffix == ".tflite":  # (a directory by that name would pass for the file, beside its sidecar)
        raise ExportError(f"{out}: a SavedModel is a directory; give it a name not ending in .tflite (or run kzoo "
                          "export tflite)")
    check_out(out, overwrite, model_dir, layout.report_path(out))
    started = time.time()
    advance = progress(5) if progress else (lambda n=1: None)
    config = modeldir.read_config(model_dir)
    options = text_options(config, top_k=top_k, max_masks=max_masks, max_answer_len=max_answer_len)
    longest = max_tokens(config)
    text_length = text_max_length(max_length, longest, config)
    buckets = length_buckets(longest)
    tokenizer = _text_tokenizer(model_dir, config, text)
    check_text_only(tokenizer is not None, "--ids-only" if text is False else "its tokenizer cannot run in the "
                    "graph, or its task has no text signature", top_k=top_k, max_masks=max_masks,
                    max_answer_len=max_answer_len, max_length=max_length)
    model, _ = model_and_config(model_dir)
    advance()

    holder, signatures = _signatures(model, config, tokenizer, options, text_length, buckets)
    advance()
    with contextlib.ExitStack() as stack:
        # The report is renamed into place first and OUT last, so an OUT that exists is complete.
        tmp = stack.enter_context(atomic_dir(out, overwrite=overwrite))
        tmp_report = stack.enter_context(atomic_file(layout.report_path(out), overwrite=True))
        version = tmp / layout.SAVEDMODEL_VERSION
        tf.saved_model.save(holder, str(version), signatures=signatures)
        modeldir.copy_sidecar(model_dir, layout.savedmodel_sidecar(version))
        advance()
        loaded = tf.saved_model.load(str(version))  # checked as a server would load it
        evaluation = _evaluate(loaded, model, config, tokenizer, longest, text_length, options)
        advance()
        report = {
            "format": "savedmodel",
            "out": str(out),
            "path": str(out / layout.SAVEDMODEL_VERSION / "saved_model.pb"),
            "bytes": sum(f.stat().st_size for f in version.rglob("*") if f.is_file()),
            "architecture": config.get("architecture"),
            "task": config.get("task"),
            "xla": True,
            "signatures": {name: {"inputs": sorted(fn.structured_input_signature[1]),
                                  "outputs": sorted(fn.structured_outputs)}
                           for name, fn in loaded.signatures.items()},
            "max_tokens": longest,
            "length_buckets": buckets,
            "batch_buckets": list(BATCH_BUCKETS),
            "text": ({"signature": layout.TEXT_SIGNATURE, "max_length": text_length,
                      "length_buckets": length_buckets(text_length), **options} if tokenizer is not None else None),
            "evaluation": evaluation,
            "ok": evaluation["ok"],
            "seconds": round(time.time() - started, 1),
        }
        check.write_report(tmp_report, report)
        advance()
    return report


def _signatures(model, config, tokenizer, options, text_length, buckets):
    """(a tf.Module holding the model's variables and functions, {signature name: concrete function})."""
    import tensorflow as tf

    signature, pads = input_signature(model), pad_values(model)
    holder = variable_holder(model)
    holder.serving_default_xla = tf.function(ids_function(model), input_signature=[signature], jit_compile=True)

    def serving_default(inputs):
        with tf.control_dependencies(input_checks(inputs, config)):  # before the XLA part
            inputs = {name: tf.identity(value) for name, value in inputs.items()}
        return bucketed(holder.serving_default_xla, inputs, pads, buckets)

    holder.serving_default = tf.function(serving_default, input_signature=[signature])
    signatures = {layout.IDS_SIGNATURE: holder.serving_default.get_concrete_function()}
    if tokenizer is not None:
        numeric, strings = text_signature(model, config, tokenizer, options)
        holder.serve_text_numeric = tf.function(numeric, input_signature=[signature], jit_compile=True)
        compiled = lambda batch: bucketed(holder.serve_text_numeric, batch, pads)  # noqa: E731
        text_fn = text_function(tokenizer, model, config, compiled, strings, text_length, length_buckets(text_length))
        names = TASKS[config["task"]].text_inputs

        def serve_text(*texts):
            with tf.control_dependencies(text_checks(texts, names)):  # before the tokenizer
                texts = [tf.reshape(text, [-1]) for text in texts]  # (whatever came: a wrong one fails the checks)
            return text_fn(*texts)

        # (autograph=False: the text function has no Python control flow on tensors; converting it took ~1/4
        # of an export)
        holder.serve_text = tf.function(serve_text, input_signature=text_specs(config, any_rank=True),
                                         autograph=False)
        signatures[layout.TEXT_SIGNATURE] = holder.serve_text.get_concrete_function()
    return holder, signatures


def _text_tokenizer(model_dir, config, text):
    if text is False:
        return None
    task = TASKS.get(config.get("task"))
    if text is None:
        try:
            tokenizer = load_text_tokenizer(model_dir)
        except ExportError:
            return None
        return tokenizer if task is not None and task.text_signature is not None else None
    return load_text_tokenizer(model_dir)


def _evaluate(loaded, model, config, tokenizer, longest, text_length, options):
    """serving_default (and serve_text) of the reloaded SavedModel against the Keras model."""
    import tensorflow as tf

    texts = with_masks(EVALUATION_TEXTS, getattr(tokenizer, "mask_token", None)) if tokenizer else EVALUATION_TEXTS
    batches = id_batches(model, tokenizer, texts, batch_size=8, length=min(longest, 64), seed=1)
    # and a shape off the buckets: padded to [4, bucket] in the signature, cut back to [3, 13]
    batches.append({k: v[:3, ..., :13] for k, v in batches[0].items()})
    serve = loaded.signatures[layout.IDS_SIGNATURE]
    rows = check.ids_rows(lambda batch: {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in
                                                                             batch.items()}).items()},
                          model, config, batches)
    result = {"against": "keras fp32", "inputs": "text" if tokenizer else "random ids", "bound": BOUND,
              layout.IDS_SIGNATURE: rows}
    ok = check.passes(rows, "max_abs_diff", BOUND)
    if tokenizer is not None:
        serve_text = loaded.signatures[layout.TEXT_SIGNATURE]
        text = check.text_report(
            lambda inputs: {k: v.numpy() for k, v in
                            serve_text(**{k: tf.constant(v) for k, v in inputs.items()}).items()},
            model, config, tokenizer, texts, text_length, options)
        result[layout.TEXT_SIGNATURE] = text
        ok = ok and text["ids_equal_python_tokenizer"] and check.passes(text["outputs"], "max_abs_diff", BOUND)
    result["ok"] = bool(ok)
    return result
