"""`kzoo export tflite`: a LiteRT (.tflite) model with builtin ops only, in five precisions.

    OUT.tflite               the model; signature `serving_default` (ids in, inputs [-1, -1]: any batch
                             size and length through `resize_tensor_input` / signature runners), or
                             with --with-tokenizer `serve_text` (strings in, the task's output)
    OUT.tflite.report.json   size, op list, parity against Keras fp32 on held-out text
    OUT.tflite.kzoo/         config.json + tokenizer files (for kzoo.runtime and the pipelines)
(kzoo.io.layout).

--quantize  (bounds checked on every output, against Keras fp32, on text not used for calibration)
    none           fp32                                      max abs diff <= 1e-4
    fp16           fp16 weights, fp32 compute                max abs diff <= 1e-2
    dynamic-int8   int8 weights, fp32 activations            cosine >= 0.99 (per example)
    int8           int8 weights and activations (calibrated; cosine >= 0.99
                   LayerNorm in fp32)
    int16x8        int8 weights, int16 activations           cosine >= 0.99

Full-integer modes calibrate on text: `--calibration FILE` (one text per line) or built-in
multilingual sentences, tokenized by the model dir's tokenizer (random ids without one). They also
build the model with an attention-mask bias of -100 instead of -6e4: the mask is added to the
attention scores, and a -6e4 in that tensor's range would leave the real scores a few int8 levels.

Ops: TFLITE_BUILTINS only (+ the INT8 / 16x8 builtin sets); never Flex (SELECT_TF_OPS), which LiteRT
cannot run. A --with-tokenizer model adds tf-text's custom ops (WhitespaceTokenizeWithOffsetsV2,
FastSentencepieceTokenize, RaggedTensorToTensor; ByteSplitWithOffsets, ByteSplitByOffsets and
NgramsStringJoin for the grapheme marker of SentencePiece tokenizers converted since it came), registered at run time by `tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS`.
Every export's op list is read back from the file and checked.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np

from kzoo.errors import KzooError
from kzoo.export import check
from kzoo.export.common import (
    ExportError, check_out, check_text_only, ids_function, input_names, input_signature, load_text_tokenizer,
    max_tokens, model_and_config, require_text_signature, text_function, text_max_length, text_options,
    text_signature, text_specs, variable_holder, with_choices,
)
from kzoo.export.data import (
    CALIBRATION_TEXTS, EVALUATION_TEXTS, full_batches, id_batches, read_texts, text_inputs, with_languages,
    with_masks,
)
from kzoo.export.tflite_model import layer_norm_nodes, measured_ranges, quantize_int16x8, read_ops
from kzoo.io import layout, modeldir
from kzoo.io.stderr import native_quiet
from kzoo.io.atomic import atomic_dir, atomic_file, interrupts_kept, scratch_dir
from kzoo.tasks import TASKS

QUANTIZE = ("none", "fp16", "dynamic-int8", "int8", "int16x8")
FULL_INTEGER = ("int8", "int16x8")
BOUNDS = {  # mode -> (metric, bound): max_abs_diff at most, cosine_min at least
    "none": ("max_abs_diff", 1e-4),
    "fp16": ("max_abs_diff", 1e-2),
    "dynamic-int8": ("cosine_min", 0.99),
    "int8": ("cosine_min", 0.99),
    "int16x8": ("cosine_min", 0.99),
}
FULL_INTEGER_MASK_BIAS = -100.0  # exp(-100) is 0 next to any real attention weight
CALIBRATION_LENGTH = 64  # tokens per calibration batch (the model's longest if that is shorter)
CALIBRATION_BATCH = 4
# Custom ops a --with-tokenizer model may hold: tf-text's TFLite kernels. Anything else custom
# (a Flex op, an unsupported TF op that allow_custom_ops let through) fails the export.
TEXT_CUSTOM_OPS = ("TFText>", "RaggedTensorToTensor")


def export_tflite(model_dir, out, *, quantize="none", calibration=None, with_tokenizer=False, mask_bias=None,
                  top_k=None, max_masks=None, max_answer_len=None, max_length=None, overwrite=False, progress=None):
    """Writes `out` (.tflite), `out.report.json` and `out.kzoo/`; returns the report.

    quantize: one of QUANTIZE. calibration: a text file (one text per line) for int8 / int16x8.
    with_tokenizer: strings in (the model dir's SentencePiece tokenizer inside the model).
    mask_bias: the attention-mask bias to build with (default: -100 for int8 / int16x8, else exact).
    top_k, max_masks: the fill-mask text signature's options, max_answer_len question answering's (None:
          kzoo.tasks' defaults).
    max_length: with_tokenizer: the longest input in tokens (None: the model's); longer texts are cut,
          and the `truncated` output says which.
    progress: optional factory `(total) -> advance(n)` for a progress bar.
    """
    out = Path(out)
    calibration_texts = _check_arguments(model_dir, out, quantize, calibration, mask_bias, overwrite)
    started = time.time()
    advance = progress(5) if progress else (lambda n=1: None)
    config = modeldir.read_config(model_dir)
    check_text_only(with_tokenizer, "ids in: add --with-tokenizer", top_k=top_k, max_masks=max_masks,
                    max_answer_len=max_answer_len, max_length=max_length)
    options = text_options(config, top_k=top_k, max_masks=max_masks, max_answer_len=max_answer_len)
    longest = max_tokens(config)
    text_length = text_max_length(max_length, longest, config)
    if with_tokenizer:
        require_text_signature(config)
    text_tokenizer = load_text_tokenizer(model_dir) if with_tokenizer else None
    tokenizer = text_tokenizer or _any_tokenizer(model_dir)
    reference, _ = model_and_config(model_dir)  # Keras fp32, exact: what every number is measured against
    if mask_bias is None and quantize in FULL_INTEGER:
        mask_bias = FULL_INTEGER_MASK_BIAS
    chunked = config["backbone"].get("attention_chunk_size") is not None
    model = model_and_config(model_dir, mask_bias, full_attention=True)[0] if mask_bias is not None or chunked \
        else reference
    advance()

    holder, concrete = _trace(model, config, text_tokenizer, options, text_length)
    advance()
    dataset = None
    if quantize in FULL_INTEGER:
        texts = with_masks(calibration_texts or CALIBRATION_TEXTS, getattr(tokenizer, "mask_token", None), seed=2)
        names = TASKS[config["task"]].text_inputs if text_tokenizer is not None else None
        dataset = _dataset(model, tokenizer, texts, names, text_length)
    content = _convert_checked(concrete, holder, quantize, dataset, text_tokenizer is not None, out)
    ops = _checked_ops(content, text_tokenizer is not None, reference.count_params(), quantize)
    advance()
    with _native_logs_quiet():
        evaluation = _evaluate(content, reference, config, text_tokenizer, tokenizer, text_length, options, quantize)
    advance()

    report = {
        "format": "tflite", "out": str(out), "bytes": len(content), "size": check.human_size(len(content)),
        "quantize": quantize, "architecture": config.get("architecture"), "task": config.get("task"),
        "parameters": reference.count_params(), "signatures": evaluation.pop("signatures"),
        "ops": ops["all"], "op_counts": ops["counts"], "custom_ops": ops["custom"],
        "builtin_only": not ops["custom"], "integer_op_fraction": ops["integer_fraction"],
        "mask_bias": mask_bias, "max_tokens": longest, "with_tokenizer": text_tokenizer is not None,
        "max_length": text_length if text_tokenizer is not None else None,
        "calibration": dataset and {"source": str(calibration) if calibration else "built-in",
                                    "texts": len(calibration_texts or CALIBRATION_TEXTS),
                                    "batches": len(dataset.batches), "inputs": dataset.kind},
        "evaluation": evaluation, "ok": evaluation["ok"], "seconds": None,
    }
    _write(out, content, model_dir, report, overwrite, started)
    advance()
    return report


def _check_arguments(model_dir, out, quantize, calibration, mask_bias, overwrite):
    """One-line errors before any slow work; returns the calibration texts (None: the built-in ones)."""
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown --quantize {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if mask_bias is not None and not (isinstance(mask_bias, (int, float)) and math.isfinite(mask_bias) and mask_bias < 0):
        raise ExportError(f"--mask-bias {mask_bias}: a finite negative number is needed (what masked positions add to "
                          f"the attention scores; {FULL_INTEGER_MASK_BIAS:g} is int8's default)")
    if out.suffix != ".tflite":
        raise ExportError(f"{out}: the output file name must end in .tflite")
    check_out(out, overwrite, model_dir, layout.report_path(out), layout.tflite_sidecar(out))
    if calibration is None:
        return None
    if quantize not in FULL_INTEGER:
        raise ExportError(f"--calibration is for int8 / int16x8; --quantize {quantize} needs no calibration")
    return read_texts(calibration)


def _any_tokenizer(model_dir):
    """Any tokenizer (Python-only ones too) for calibration and evaluation text; None: random ids."""
    from kzoo.tokenizers import load_tokenizer

    try:
        return load_tokenizer(model_dir)
    except KzooError:
        return None


def _trace(model, config, text_tokenizer, options, text_length):
    """(variable holder, the concrete function to convert): ids in, or text in with the tokenizer."""
    import tensorflow as tf

    holder = variable_holder(model)
    if text_tokenizer is None:
        fn = tf.function(ids_function(model), input_signature=[input_signature(model)])
    else:
        numeric, strings = text_signature(model, config, text_tokenizer, options)
        serve_text = text_function(text_tokenizer, model, config, numeric, strings, text_length)
        fn = tf.function(serve_text, input_signature=text_specs(config), autograph=False)  # (as the SavedModel's)
    return holder, fn.get_concrete_function()


def _convert_checked(concrete, holder, quantize, dataset, text, out):
    try:
        with _native_logs_quiet():
            return _convert(concrete, holder, quantize, dataset, text, out)
    except KzooError:  # (kzoo's own: already one line, e.g. OUT's folder cannot be written)
        raise
    except Exception as e:  # converter errors run to pages of MLIR; keep the line that says what failed
        raise ExportError(f"TFLite conversion ({quantize}) failed: {_converter_message(e)}") from None


def _checked_ops(content, text, params, quantize):
    """The file's op list, checked: builtins (+ tf-text's kernels with a tokenizer), weights present."""
    ops = read_ops(content)
    bad = [op for op in ops["custom"] if not (text and op.startswith(TEXT_CUSTOM_OPS))]
    if bad:
        raise ExportError(f"the converted model needs ops LiteRT does not have as builtins: {', '.join(bad)}")
    minimum = params * {"none": 4, "fp16": 2}.get(quantize, 1) // 2
    if len(content) < minimum:  # the from_saved_model failure mode: a graph without its weights
        raise ExportError(f"the converted model is {check.human_size(len(content))}, too small for {params:,} "
                          "parameters: its weights are missing")
    return ops


def _write(out, content, model_dir, report, overwrite, started):
    """Sidecars first, the .tflite last: a .tflite that exists is complete."""
    with contextlib.ExitStack() as stack:
        tmp_model = stack.enter_context(atomic_file(out, overwrite=overwrite))
        tmp_report = stack.enter_context(atomic_file(layout.report_path(out), overwrite=True))
        tmp_side = stack.enter_context(atomic_dir(layout.tflite_sidecar(out), overwrite=True))
        tmp_model.write_bytes(content)
        modeldir.copy_sidecar(model_dir, tmp_side)
        report["seconds"] = round(time.time() - started, 1)
        check.write_report(tmp_report, report)


@contextlib.contextmanager
def _native_logs_quiet():
    """Silences what TFLite's C++ converter, calibrator and interpreter print to fd 2 (pages of MLIR
    notes, "fully_quantize: 0, ...", delegate notices) and the deprecation warning TF's calibrator
    raises for its own use of tf.lite.Interpreter. Errors still arrive as Python exceptions."""
    import warnings

    with native_quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        yield


def _converter_message(e):
    """The gist of a converter error: its first "error: ..." line, without the MLIR location."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "error: " in line:
            return line.rsplit("error: ", 1)[1]
    return lines[0] if lines else type(e).__name__


# --- conversion -------------------------------------------------------------------------------------


def _convert(concrete, holder, quantize, dataset, text, out):
    import tensorflow as tf

    # What `from_concrete_functions` does inside (save, then convert the SavedModel), done here so
    # the signature key is ours: it names a single function "serving_default" whatever it is.
    # The holder tracks the variables, so the weights are saved with the graph. The SavedModel is
    # written beside OUT (a scratch dir the next export to OUT removes if this process is killed).
    key = layout.TEXT_SIGNATURE if text else layout.IDS_SIGNATURE
    with scratch_dir(out) as saved:
        tf.saved_model.save(holder, str(saved), signatures={key: concrete})

        def converter(ops):
            c = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[key])
            c.target_spec.supported_ops = ops
            if text:
                c.allow_custom_ops = True  # tf-text's tokenizer kernels; anything else is rejected after
            return c

        with interrupts_kept():  # (TF's converter runs gc.collect(), where a Ctrl-C or SIGTERM could get lost)
            return _convert_with(converter, quantize, dataset, text)


def _convert_with(converter, quantize, dataset, text):
    import tensorflow as tf

    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "none":
        return converter(builtins).convert()
    if quantize == "fp16":
        c = converter(builtins)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
        return c.convert()
    if quantize == "dynamic-int8":
        c = converter(builtins)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        return c.convert()
    if quantize == "int8":
        # The converter's own steps (calibrate, then the MLIR quantizer), with the ranges measured anew
        # between them: see kzoo.export.tflite_model.measured_ranges.
        from tensorflow.lite.python.convert import mlir_quantize

        c = converter([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, *builtins])
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = dataset
        if text:  # the calibrator runs the model, tokenizer included
            c.target_spec._experimental_custom_op_registerers = _text_registerers()
        c._experimental_calibrate_only = True
        calibrated = measured_ranges(c.convert(), dataset, _text_registerers() if text else [])
        return mlir_quantize(calibrated, input_data_type=tf.float32, output_data_type=tf.float32,
                             denylisted_nodes=layer_norm_nodes(calibrated))
    # int16x8: see kzoo.export.tflite_model.quantize_int16x8
    return quantize_int16x8(converter(builtins).convert(), dataset, _text_registerers() if text else [])


def _text_registerers():
    """tf-text's TFLite kernel registerers (functions), for the calibrator to run the tokenizer."""
    import tensorflow_text

    return list(tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)


class _Dataset:
    """A representative dataset: a callable returning an iterator of signature-input dicts."""

    def __init__(self, batches, kind):
        self.batches, self.kind = batches, kind

    def __call__(self):
        return iter(self.batches)


def _dataset(model, tokenizer, texts, text_inputs_names, longest):
    """Calibration batches: the text signature's inputs (`text_inputs_names`: the model tokenizes), or ids."""
    if text_inputs_names:
        batches = [{name: np.asarray([t.encode("utf-8") for t in chunk], dtype=object)
                    for name, chunk in text_inputs(text_inputs_names, part).items()}
                   for part in full_batches(texts, CALIBRATION_BATCH)]
        return _Dataset(batches, "text")
    batches = id_batches(model, tokenizer, texts, batch_size=CALIBRATION_BATCH,
                         length=min(longest, CALIBRATION_LENGTH), seed=2)
    return _Dataset(batches, "text" if tokenizer is not None else "random ids")


# --- evaluation -------------------------------------------------------------------------------------


def _evaluate(content, reference, config, text_tokenizer, tokenizer, longest, options, quantize):
    """The converted model, run by LiteRT, against the Keras fp32 model on held-out text."""
    from kzoo.runtime.runners import TFLiteRunner

    runner = TFLiteRunner("<converted>", model_content=content)
    metric, bound = BOUNDS[quantize]
    texts = with_masks(EVALUATION_TEXTS, getattr(tokenizer, "mask_token", None), seed=3)
    result = {"against": "keras fp32", "texts": len(texts), "metric": metric, "bound": bound,
              "signatures": runner.interpreter.get_signature_list()}
    if text_tokenizer is None:
        # Two batches of different lengths (padded to their longest row): exercises input resizing.
        rows = check.ids_rows(runner, reference, config, _eval_batches(reference, tokenizer, texts, longest))
        result.update(inputs="text" if tokenizer is not None else "random ids", outputs=rows)
        result["ok"] = check.passes(rows, metric, bound)
    else:
        text = check.text_report(runner, reference, config, text_tokenizer, texts, longest, options)
        result.update(inputs="text (tokenized in the model)", outputs=text["outputs"],
                      ids_equal_python_tokenizer=text["ids_equal_python_tokenizer"],
                      integer_agreement=text["integer_agreement"])
        if "offsets_equal_python_tokenizer" in text:
            result["offsets_equal_python_tokenizer"] = text["offsets_equal_python_tokenizer"]
        result["ok"] = check.passes(text["outputs"], metric, bound) and text["ids_equal_python_tokenizer"]
    return result


def _eval_batches(model, tokenizer, texts, longest):
    if tokenizer is None:
        a = id_batches(model, None, texts, batch_size=8, length=min(longest, 24), seed=3)
        b = id_batches(model, None, texts, batch_size=8, length=min(longest, 11), seed=4)
        return a + b
    batches = []
    for start in range(0, len(texts), 8):
        batch = tokenizer(texts[start:start + 8], max_length=longest, truncation=True)
        batch = {k: np.asarray(v, "int32") for k, v in batch.items()}
        batch = {name: batch.get(name, np.zeros_like(batch["token_ids"])) for name in input_names(model)}
        batches.append(with_choices(batch, model))
    return with_languages(batches, model, seed=3)
