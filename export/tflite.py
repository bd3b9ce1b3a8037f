"""`kzoo export tflite`: a LiteRT (.tflite) model with builtin ops only, in five precisions.

    OUT.tflite               the model; signature `serving_default` (ids in, inputs [-1, -1]: any batch
                             size and length through `resize_tensor_input` / signature runners), or
                             with --with-tokenizer `serve_text` (strings in, the task's output)
    OUT.tflite.report.json   size, op list, parity against Keras fp32 on held-out text
    OUT.tflite.kzoo/         config.json + tokenizer files (for kzoo.runtime and the pipelines)

--quantize  (bounds checked on every output, against Keras fp32, on text not used for calibration)
    none           fp32                                      max abs diff <= 1e-4
    fp16           fp16 weights, fp32 compute                max abs diff <= 1e-2
    dynamic-int8   int8 weights, fp32 activations            cosine >= 0.99 (per position)
    int8           int8 weights and activations (calibrated) cosine >= 0.99
    int16x8        int8 weights, int16 activations           cosine >= 0.99

Full-integer modes calibrate on text: `--calibration FILE` (one text per line) or built-in
multilingual sentences, tokenized by the model dir's tokenizer (random ids without one). They also
build the model with an attention-mask bias of -100 instead of -6e4: the mask is added to the
attention scores, and a -6e4 in that tensor's range would leave the real scores a few int8 levels.

Ops: TFLITE_BUILTINS only (+ the INT8 / 16x8 builtin sets); never Flex (SELECT_TF_OPS), which LiteRT
cannot run. A --with-tokenizer model adds tf-text's custom ops (FastSentencepieceTokenize,
RaggedTensorToTensor), registered at run time by `tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS`.
Every export's op list is read back from the file and checked.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np

from kzoo.errors import KzooError
from kzoo.export import (
    CALIBRATION_TEXTS, EVALUATION_TEXTS, MAX_MASKS, TOP_K, ExportError, call_model, check_out, compare,
    copy_sidecar, encode_in_graph, full_batches, human_size, id_batches, input_names, input_signature,
    load_model, load_text_tokenizer, mask_bias_scope, max_tokens, merge_comparisons, native_logs_quiet,
    text_outputs, variable_holder, with_masks, write_report,
)

QUANTIZE = ("none", "fp16", "dynamic-int8", "int8", "int16x8")
FULL_INTEGER = ("int8", "int16x8")
BOUNDS = {  # mode -> (metric, bound, "max" | "min")
    "none": ("max_abs_diff", 1e-4, "max"),
    "fp16": ("max_abs_diff", 1e-2, "max"),
    "dynamic-int8": ("cosine_min", 0.99, "min"),
    "int8": ("cosine_min", 0.99, "min"),
    "int16x8": ("cosine_min", 0.99, "min"),
}
FULL_INTEGER_MASK_BIAS = -100.0  # exp(-100) is 0 next to any real attention weight
CALIBRATION_LENGTH = 64  # tokens per calibration batch (the model's longest if that is shorter)
CALIBRATION_BATCH = 4
# Custom ops a --with-tokenizer model may hold: tf-text's TFLite kernels. Anything else custom
# (a Flex op, an unsupported TF op that allow_custom_ops let through) fails the export.
TEXT_CUSTOM_OPS = ("TFText>", "RaggedTensorToTensor")


def export_tflite(model_dir, out, *, quantize="none", calibration=None, with_tokenizer=False, mask_bias=None,
                  top_k=TOP_K, max_masks=MAX_MASKS, overwrite=False, progress=None):
    """Writes `out` (.tflite), `out.report.json` and `out.kzoo/`; returns the report.

    quantize: one of QUANTIZE. calibration: a text file (one text per line) for int8 / int16x8.
    with_tokenizer: strings in (the model dir's SentencePiece tokenizer inside the model).
    mask_bias: the attention-mask bias to build with (default: -100 for int8 / int16x8, else exact).
    progress: optional factory `(total) -> advance(n)` for a progress bar.
    """
    import tensorflow as tf

    from kzoo.modeldir import atomic_dir, atomic_file, read_config
    from kzoo.tasks import load_tokenizer

    out = Path(out)
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown --quantize {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if out.suffix != ".tflite":
        raise ExportError(f"{out}: the output file name must end in .tflite")
    check_out(out, overwrite)
    calibration_texts = None
    if calibration is not None:
        if quantize not in FULL_INTEGER:
            raise ExportError(f"--calibration is for int8 / int16x8; --quantize {quantize} needs no calibration")
        from kzoo.export import read_texts

        calibration_texts = read_texts(calibration)
    started = time.time()
    advance = progress(5) if progress else (lambda n=1: None)

    config = read_config(model_dir)
    text_tokenizer = load_text_tokenizer(model_dir) if with_tokenizer else None
    try:  # any tokenizer (Python-only ones too) for calibration and evaluation text
        tokenizer = text_tokenizer or load_tokenizer(model_dir)
    except KzooError:  # none: random ids instead
        tokenizer = None
    reference, _ = load_model(model_dir)  # Keras fp32, exact: what every number is measured against
    if mask_bias is None and quantize in FULL_INTEGER:
        mask_bias = FULL_INTEGER_MASK_BIAS
    model = load_model(model_dir, mask_bias)[0] if mask_bias is not None else reference
    longest = max_tokens(reference)
    advance()

    # === Trace the function to convert ===
    with mask_bias_scope(mask_bias):
        holder = variable_holder(model)
        if text_tokenizer is None:
            fn = tf.function(lambda inputs: call_model(model, inputs), input_signature=[input_signature(model)])
        else:
            numeric, strings = text_outputs(model, config, text_tokenizer, top_k=top_k, max_masks=max_masks)

            def serve_text(text):
                return strings(numeric(encode_in_graph(text_tokenizer, model, text, longest)))

            fn = tf.function(serve_text, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        concrete = fn.get_concrete_function()
    advance()

    # === Convert ===
    dataset = None
    if quantize in FULL_INTEGER:
        texts = calibration_texts or CALIBRATION_TEXTS
        texts = with_masks(texts, getattr(tokenizer, "mask_token", None), seed=2)
        dataset = _dataset(model, tokenizer, texts, text_tokenizer is not None, longest)
    try:
        with native_logs_quiet():
            content = _convert(concrete, holder, quantize, dataset, text=text_tokenizer is not None)
    except ExportError:
        raise
    except Exception as e:  # converter errors run to pages of MLIR; keep the line that says what failed
        raise ExportError(f"TFLite conversion ({quantize}) failed: {_converter_message(e)}") from None
    advance()

    # === Check what was written: ops, size, numbers ===
    ops = read_ops(content)
    bad = [op for op in ops["custom"] if not (text_tokenizer is not None and op.startswith(TEXT_CUSTOM_OPS))]
    if bad:
        raise ExportError(f"the converted model needs ops LiteRT does not have as builtins: {', '.join(bad)}")
    params = reference.count_params()
    minimum = params * {"none": 4, "fp16": 2}.get(quantize, 1) // 2
    if len(content) < minimum:  # the from_saved_model failure mode: a graph without its weights
        raise ExportError(f"the converted model is {human_size(len(content))}, too small for {params:,} "
                          "parameters: its weights are missing")
    with native_logs_quiet():
        evaluation = _evaluate(content, reference, config, text_tokenizer, tokenizer, longest, top_k, max_masks,
                               quantize)
    advance()

    report = {
        "format": "tflite",
        "out": str(out),
        "bytes": len(content),
        "size": human_size(len(content)),
        "quantize": quantize,
        "architecture": config.get("architecture"),
        "task": config.get("task"),
        "parameters": params,
        "signatures": evaluation.pop("signatures"),
        "ops": ops["all"],
        "op_counts": ops["counts"],
        "custom_ops": ops["custom"],
        "builtin_only": not ops["custom"],
        "integer_op_fraction": ops["integer_fraction"],
        "mask_bias": mask_bias,
        "max_tokens": longest,
        "with_tokenizer": text_tokenizer is not None,
        "calibration": dataset and {"source": str(calibration) if calibration else "built-in",
                                    "texts": len(calibration_texts or CALIBRATION_TEXTS),
                                    "batches": len(dataset.batches), "inputs": dataset.kind},
        "evaluation": evaluation,
        "ok": evaluation["ok"],
        "seconds": None,
    }
    # Sidecars first, the .tflite last: a .tflite that exists is complete.
    with contextlib.ExitStack() as stack:
        tmp_model = stack.enter_context(atomic_file(out, overwrite=overwrite))
        tmp_report = stack.enter_context(atomic_file(Path(f"{out}.report.json"), overwrite=True))
        tmp_side = stack.enter_context(atomic_dir(Path(f"{out}.kzoo"), overwrite=True))
        tmp_model.write_bytes(content)
        copy_sidecar(model_dir, tmp_side)
        report["seconds"] = round(time.time() - started, 1)
        write_report(tmp_report, report)
        advance()
    return report


def _converter_message(e):
    """The gist of a converter error: its first "error: ..." line, without the MLIR location."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "error: " in line:
            return line.rsplit("error: ", 1)[1]
    return lines[0] if lines else type(e).__name__


# --- conversion ------------------------------------------------------------------------------


def _convert(concrete, holder, quantize, dataset, text):
    import tempfile

    import tensorflow as tf

    # What `from_concrete_functions` does inside (save, then convert the SavedModel), done here so
    # the signature key is ours: it names a single function "serving_default" whatever it is.
    # The holder tracks the variables, so the weights are saved with the graph.
    key = "serve_text" if text else "serving_default"
    saved = tempfile.mkdtemp(prefix="kzoo-tflite-")
    try:
        tf.saved_model.save(holder, saved, signatures={key: concrete})

        def converter(ops):
            c = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[key])
            c.target_spec.supported_ops = ops
            if text:
                c.allow_custom_ops = True  # tf-text's tokenizer kernels; anything else is rejected after
            return c

        return _convert_with(converter, quantize, dataset, text)
    finally:
        shutil.rmtree(saved, ignore_errors=True)


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
        c = converter([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, *builtins])
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = dataset
        if text:  # the calibrator runs the model, tokenizer included
            c.target_spec._experimental_custom_op_registerers = _text_registerers()
        return c.convert()
    # int16x8: see _quantize_int16x8
    return _quantize_int16x8(converter(builtins).convert(), dataset, text)


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


def _dataset(model, tokenizer, texts, text, longest):
    if text:  # strings in: the model tokenizes
        batches = [{"text": np.asarray([t.encode("utf-8") for t in chunk], dtype=object)}
                   for chunk in full_batches(texts, CALIBRATION_BATCH)]
        return _Dataset(batches, "text")
    batches = id_batches(model, tokenizer, texts, batch_size=CALIBRATION_BATCH,
                         length=min(longest, CALIBRATION_LENGTH), seed=2)
    return _Dataset(batches, "text" if tokenizer is not None else "random ids")


def _quantize_int16x8(float_model, dataset, text):
    """int16 activations, int8 weights, through TF's (older) 16x8 quantizer, with two repairs.

    1. The quantizer asks for a calibrated range on every input of certain ops, integer ones
       included, and aborts ("Empty min/max for tensor serving_default_token_ids:0") where Keras'
       embedding lookup adds/compares int32 ids. Integer tensors get a placeholder range; they stay
       int32 (checked below), the range is never used.
    2. It quantizes SQUARED_DIFFERENCE (LayerNorm's variance) to int16, for which LiteRT has no
       kernel; that op runs in float between a DEQUANTIZE and a QUANTIZE.
    This is the converter's own path (`TFLiteConverter` with the 16x8 op set) with the repairs between
    its calibrate and quantize steps, which it does not expose: hence its private Calibrator.
    """
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema
    from tensorflow.lite.python.optimize import calibrator

    model = _unpack(float_model)
    int32_before = {t.name for g in model.subgraphs for t in g.tensors if t.type == schema.TensorType.INT32}
    for g in model.subgraphs:
        for t in g.tensors:
            if t.type == schema.TensorType.INT32 and not _has_data(model, t):
                t.quantization = t.quantization or schema.QuantizationParametersT()
                t.quantization.min, t.quantization.max = [0.0], [1.0]
    registerers = _text_registerers() if text else []
    quantized = calibrator.Calibrator(_pack(model), [], registerers).calibrate_and_quantize(
        dataset, tf.float32, tf.float32, True, tf.int16, tf.int64)
    model = _unpack(quantized)
    _float_islands(model, {schema.BuiltinOperator.SQUARED_DIFFERENCE})
    changed = sorted(t.name.decode() for g in model.subgraphs for t in g.tensors
                     if t.name in int32_before and t.type != schema.TensorType.INT32)
    if changed:
        raise ExportError(f"int16x8: integer tensors were quantized ({', '.join(changed[:3])}, ...)")
    return _pack(model)


def _unpack(content):
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(content), 0)


def _pack(model):
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _has_data(model, tensor):
    data = model.buffers[tensor.buffer].data if 0 <= tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _float_islands(model, codes):
    """Runs ops in `codes` that were given int16 tensors in float: DEQUANTIZE in, QUANTIZE out
    (into the original output tensor, keeping its calibrated scale)."""
    from ai_edge_litert import schema_py_generated as schema

    dequantize = _opcode(model, schema.BuiltinOperator.DEQUANTIZE)
    quantize = _opcode(model, schema.BuiltinOperator.QUANTIZE)
    for g in model.subgraphs:
        operators = []
        for op in g.operators:
            code = model.operatorCodes[op.opcodeIndex]
            int16 = [i for i in list(op.inputs) + list(op.outputs)
                     if i >= 0 and g.tensors[i].type == schema.TensorType.INT16]
            if max(code.builtinCode, code.deprecatedBuiltinCode) not in codes or not int16:
                operators.append(op)
                continue
            op.inputs, op.outputs = list(op.inputs), list(op.outputs)
            for k, i in enumerate(op.inputs):
                if i >= 0 and g.tensors[i].type == schema.TensorType.INT16:
                    op.inputs[k] = _float_twin(g, i)
                    operators.append(_operator(dequantize, [i], [op.inputs[k]]))
            tail = []
            for k, o in enumerate(op.outputs):
                if g.tensors[o].type == schema.TensorType.INT16:
                    op.outputs[k] = _float_twin(g, o)
                    tail.append(_operator(quantize, [op.outputs[k]], [o]))
            operators += [op, *tail]
        g.operators = operators


def _opcode(model, builtin):
    from ai_edge_litert import schema_py_generated as schema

    for i, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_twin(subgraph, index):
    from ai_edge_litert import schema_py_generated as schema

    t = subgraph.tensors[index]
    twin = schema.TensorT()
    twin.name = t.name + b"_float"
    twin.shape = None if t.shape is None else list(t.shape)
    twin.shapeSignature = None if t.shapeSignature is None else list(t.shapeSignature)
    twin.type, twin.buffer = schema.TensorType.FLOAT32, 0
    subgraph.tensors.append(twin)
    return len(subgraph.tensors) - 1


def _operator(opcode, inputs, outputs):
    from ai_edge_litert import schema_py_generated as schema

    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
    return op


# --- reading a .tflite back --------------------------------------------------------------------


def read_ops(content):
    """The operators in a .tflite file: {"all", "counts", "custom", "integer_fraction"}.

    Builtins by name (ADD, GELU, ...), custom ops by their custom code (Flex ops are custom ops named
    "Flex..."). integer_fraction: of the ops computing on real values, the share with int8/int16
    outputs (how much of a quantized model actually runs integer kernels).
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        c = model.OperatorCodes(i)
        code = max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
        codes.append(c.CustomCode().decode() if code == schema.BuiltinOperator.CUSTOM else names.get(code, str(code)))
    counts, real, integer = {}, 0, 0
    quantized = (schema.TensorType.INT8, schema.TensorType.INT16)
    for s in range(model.SubgraphsLength()):
        g = model.Subgraphs(s)
        for j in range(g.OperatorsLength()):
            op = g.Operators(j)
            name = codes[op.OpcodeIndex()]
            counts[name] = counts.get(name, 0) + 1
            if op.OutputsLength() and name not in ("QUANTIZE", "DEQUANTIZE"):
                kind = g.Tensors(op.Outputs(0)).Type()
                if kind in quantized or kind == schema.TensorType.FLOAT32:
                    real += 1
                    integer += kind in quantized
    custom = sorted({n for n in codes if n not in names.values()})
    return {"all": sorted(set(codes)), "counts": dict(sorted(counts.items())), "custom": custom,
            "integer_fraction": round(integer / real, 3) if real else 0.0}


# --- evaluation ---------------------------------------------------------------------------------


def _evaluate(content, reference, config, text_tokenizer, tokenizer, longest, top_k, max_masks, quantize):
    """The converted model, run by LiteRT, against the Keras fp32 model on held-out text."""
    from kzoo.runtime import TFLiteRunner

    runner = TFLiteRunner("<converted>", model_content=content)
    metric, bound, sense = BOUNDS[quantize]
    texts = with_masks(EVALUATION_TEXTS, getattr(tokenizer, "mask_token", None), seed=3)
    result = {"against": "keras fp32", "texts": len(texts), "metric": metric, "bound": bound,
              "signatures": runner.interpreter.get_signature_list()}
    if text_tokenizer is None:
        parts = []
        # Two batches of different lengths (padded to their longest row): exercises input resizing.
        for batch in _eval_batches(reference, tokenizer, texts, longest):
            want = {k: np.asarray(v) for k, v in call_model(reference, batch).items()}
            parts.append(compare(runner(batch), want, batch["padding_mask"]))
        rows = merge_comparisons(parts)
        result["inputs"] = "text" if tokenizer is not None else "random ids"
        result["outputs"] = rows
    else:
        got = runner(texts)
        width = got["token_ids"].shape[1]
        batch = text_tokenizer(texts, max_length=longest, truncation=True, padding="max_length")
        batch = {k: np.asarray(v, "int32")[:, :width] for k, v in batch.items()}
        batch = {name: batch.get(name, np.zeros_like(batch["token_ids"])) for name in input_names(reference)}
        numeric, _ = text_outputs(reference, config, text_tokenizer, top_k=top_k, max_masks=max_masks)
        want = {k: np.asarray(v) for k, v in numeric(batch).items()}
        floats = {k: v for k, v in want.items() if v.dtype.kind == "f"}
        rows = compare({k: got[k] for k in floats}, floats, batch["padding_mask"])
        result["inputs"] = "text (tokenized in the model)"
        result["ids_equal_python_tokenizer"] = bool(np.array_equal(got["token_ids"], batch["token_ids"])
                                                    and np.array_equal(got["padding_mask"], batch["padding_mask"]))
        result["outputs"] = rows
        result["integer_agreement"] = {k: float(np.mean(got[k] == v)) for k, v in want.items() if v.dtype.kind != "f"}
    ok = all(r["finite"] and (r[metric] <= bound if sense == "max" else r[metric] >= bound) for r in rows.values())
    result["ok"] = bool(ok and result.get("ids_equal_python_tokenizer", True))
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
        batches.append({name: batch.get(name, np.zeros_like(batch["token_ids"])) for name in input_names(model)})
    return batches
