"""Reading and repairing .tflite flatbuffers (LiteRT's schema): the op list an export is checked with,
the ranges and constants both full-integer quantizers get, and the two repairs the int16x8 one needs."""

from __future__ import annotations

from kzoo.export.common import ExportError


EMPTY_RANGE = 1e-6  # the range of a tensor that is 0 on every calibration batch


def quantize_int16x8(float_model, dataset, registerers):
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
    calibrated = measured_ranges(calibrator.Calibrator(_pack(model), [], registerers).calibrate(dataset), dataset,
                                 registerers)
    # no data this time: the quantizer keeps the ranges the model carries (see measured_ranges)
    quantized = calibrator.Calibrator(calibrated, [], registerers).calibrate_and_quantize(
        lambda: iter(()), tf.float32, tf.float32, True, tf.int16, tf.int64)
    model = _unpack(quantized)
    _float_islands(model, {schema.BuiltinOperator.SQUARED_DIFFERENCE})
    changed = sorted(t.name.decode() for g in model.subgraphs for t in g.tensors
                     if t.name in int32_before and t.type != schema.TensorType.INT32)
    if changed:
        raise ExportError(f"int16x8: integer tensors were quantized ({', '.join(changed[:3])}, ...)")
    return _pack(model)


def measured_ranges(calibrated, dataset, registerers):
    """The calibrated float model with each activation's range measured again: its min and max over
    `dataset`, every tensor kept (LiteRT's preserve_all_tensors).

    TF's calibrator logs each op's inputs again after the op has run, and where the op wrote its output
    into an input's buffer (LiteRT runs some ops in place), that input's range takes in the output's
    values: wider ranges, coarser int8 (a cosine of 0.97 where these ranges give 0.99 on a toy NER
    model), and, where tokenizer ops make shapes dynamic, ranges that change from process to process
    (a text-in export was not reproducible). A tensor the data never reaches keeps its logged range; one
    that is 0 throughout gets +-EMPTY_RANGE. Constants that share a buffer get their own
    (`_unshare_constants`): what the quantizers are then given.
    """
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    model = _unpack(calibrated)
    graph = model.subgraphs[0]  # (the calibrator takes one subgraph)
    logged = [i for i, t in enumerate(graph.tensors) if t.type == schema.TensorType.FLOAT32
              and t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)]
    interpreter = InterpreterWithCustomOps(custom_op_registerers=registerers, model_content=calibrated,
                                           experimental_preserve_all_tensors=True)
    (key,) = interpreter.get_signature_list()
    run = interpreter.get_signature_runner(key)
    low, high = {}, {}
    for batch in dataset():
        run(**batch)
        for i in logged:
            try:
                values = interpreter.get_tensor(i)
            except ValueError:  # (a tensor this batch left unallocated: "Tensor data is null")
                continue
            if values.size:
                low[i] = min(low.get(i, np.inf), float(values.min()))
                high[i] = max(high.get(i, -np.inf), float(values.max()))
    for i in low:
        graph.tensors[i].quantization.min, graph.tensors[i].quantization.max = [low[i]], [high[i]]
    for i in logged:  # 0 throughout the data (a "not given" input's masked embedding): scale 0 aborts LiteRT
        q = graph.tensors[i].quantization
        if q.min[0] == 0 and q.max[0] == 0:
            q.min, q.max = [-EMPTY_RANGE], [EMPTY_RANGE]
    _unshare_constants(model)
    return _pack(model)


def layer_norm_nodes(model_content):
    """The names of the LayerNorm ops (kzoo's `*_layer_norm` layers name their output tensors), which an int8
    model runs in float. One range serves every row of a tensor, and a row XLM zeroes (padding) has a
    variance near 0: a range that holds its rsqrt (hundreds) leaves a real row's (about 1) at 0 in int8,
    and every output 0 (Transformers-initialised XLM)."""
    model = _unpack(model_content)
    return sorted({g.tensors[o].name.decode() for g in model.subgraphs for op in g.operators for o in op.outputs
                   if b"layer_norm" in g.tensors[o].name})


def _unshare_constants(model):
    """Gives each float constant that shares its buffer with another tensor a buffer of its own. The
    converter stores equal constants once (a Transformers-initialised model's LayerNorm scales, all ones,
    under several names), and the quantizers rewrite a buffer in place for each tensor on it: the second
    read int16 bytes as floats (a scale of NaN, every output 0). (One tensor read by several ops, as
    ALBERT's shared layers are, is quantized once and stays shared.)"""
    from ai_edge_litert import schema_py_generated as schema

    owner = {}  # buffer -> (subgraph, tensor) on it
    for s, g in enumerate(model.subgraphs):
        for i, t in enumerate(g.tensors):
            if t.type == schema.TensorType.FLOAT32 and _has_data(model, t):
                if owner.setdefault(t.buffer, (s, i)) != (s, i):
                    t.buffer = _copy_buffer(model, t.buffer)


def _copy_buffer(model, index):
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = model.buffers[index].data.copy()
    model.buffers.append(buffer)
    return len(model.buffers) - 1


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
