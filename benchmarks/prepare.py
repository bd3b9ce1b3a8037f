"""Builds what the benchmark runs, one step per process, cached under the cache dir (default out/bench/).

    python benchmarks/prepare.py STEP PRESET CACHE_DIR   -> prints one JSON line: seconds, peak memory, bytes

Steps (each reuses its output when the stamp next to it matches its inputs):
  reference   Transformers' backbone class with the preset's exact config (kzoo `hf_config`), random
              weights (Transformers' own init, seed 0), saved with save_pretrained; plus head.npz, a
              random masked-LM head used only to score top-1 agreement of quantized paths.
  convert     `kzoo.converters.convert.convert(reference, kzoo/)`
  onnx        torch.onnx.export(dynamo=False) -> model.onnx; Identity nodes folded away; then
              onnxruntime's quantize_dynamic -> model.int8.onnx
  savedmodel  kzoo.export.export_savedmodel (serving_default, jit_compile=True)
  tflite-*    kzoo.export.export_tflite for none / fp16 / dynamic-int8 / int8
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TFLITE_MODES = {"tflite-fp32": "none", "tflite-fp16": "fp16", "tflite-dynamic-int8": "dynamic-int8",
                "tflite-int8": "int8"}
STEPS = ("reference", "convert", "onnx", "savedmodel", *TFLITE_MODES)
FORMAT = 1  # bump to rebuild every cached artifact


# What each TensorFlow-side artifact is made from; edits elsewhere (CLI, tokenizers, tasks, loading)
# do not invalidate the cached artifacts.
def _sources(*folders):
    return tuple(sorted(str(p.relative_to(common.ROOT)) for folder in folders for p in (common.ROOT / folder).glob("*.py")))


# (kzoo/io: loading, saving and weight adoption; kzoo/tasks: the exports' text signatures)
MODEL_SOURCES = _sources("kzoo/models", "kzoo/io")
CONVERT_SOURCES = MODEL_SOURCES + _sources("converters")
EXPORT_SOURCES = MODEL_SOURCES + _sources("export", "kzoo/tasks")


def _sources_hash(files):
    h = hashlib.sha256()
    for name in files:
        file = common.ROOT / name
        h.update(name.encode())
        h.update(file.read_bytes() if file.exists() else b"")
    return h.hexdigest()[:16]


def stamp_key(step, preset):
    """What a cached artifact depends on."""
    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("torch", "transformers", "tensorflow", "keras", "onnx", "onnxruntime")}
    base = {"format": FORMAT, "preset": preset, "hf": common.hf_config(preset), "seed": common.SEED,
            "torch": versions["torch"], "transformers": versions["transformers"]}
    if step in ("reference", "conversion-reference"):
        return base
    if step == "onnx":
        return {**base, "step": step, "onnx": versions["onnx"], "onnxruntime": versions["onnxruntime"]}
    # The TensorFlow side: the model code and exporters make the graph.
    return {**base, "step": step, "tf": versions["tensorflow"], "keras": versions["keras"],
            "sources": _sources_hash(CONVERT_SOURCES if step == "convert" else EXPORT_SOURCES)}


def paths(cache, preset):
    d = Path(cache) / preset
    return {
        "dir": d,
        "reference": d / "reference",
        "head": d / "reference" / "head.npz",
        "convert": d / "kzoo",
        "onnx": d / "model.onnx",
        "onnx-int8": d / "model.int8.onnx",
        "savedmodel": d / "savedmodel",
        **{step: d / f"{step}.tflite" for step in TFLITE_MODES},
    }


def _stamp_file(cache, preset, step):
    return Path(cache) / preset / f".{step}.stamp.json"


def is_fresh(cache, preset, step):
    file = _stamp_file(cache, preset, step)
    if not file.exists():
        return False
    return json.loads(file.read_text()).get("key") == json.loads(json.dumps(stamp_key(step, preset)))


def read_stamp(cache, preset, step):
    file = _stamp_file(cache, preset, step)
    return json.loads(file.read_text()) if file.exists() else None


# --- steps --------------------------------------------------------------------------------------


def build_reference(preset, out: Path, head_file: Path | None = None, torch_class=None):
    import numpy as np
    import torch
    import transformers

    spec = common.describe(preset)
    torch.manual_seed(common.SEED)
    config = common.config_class(preset)(**common.hf_config(preset))
    model = getattr(transformers, torch_class or spec["torch_class"])(config).eval()
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(str(out))
    if head_file is not None:
        cfg = common.backbone(preset)
        rng = np.random.default_rng(common.SEED)
        h, v = cfg["hidden_dim"], cfg["vocabulary_size"]
        width = cfg.get("embedding_dim", h)  # ALBERT's head projects to the embedding width
        head = {"bias": np.zeros(v, "float32")}
        if spec["head"] != "xlm":  # XLM's head is the tied decoder alone
            head.update(kernel=(rng.standard_normal((h, width)) * 0.02).astype("float32"),
                        dense_bias=np.zeros(width, "float32"), gamma=np.ones(width, "float32"),
                        beta=np.zeros(width, "float32"))
        np.savez(head_file, **head)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "bytes": sum(f.stat().st_size for f in out.glob("*.safetensors"))}


def convert(preset, src: Path, out: Path):
    from kzoo.converters.convert import convert as kzoo_convert

    summary = kzoo_convert(src, out, overwrite=True)
    return {"parameters": summary["parameters"], "report": summary["report"],
            "bytes": (out / "model.weights.h5").stat().st_size}


def export_onnx(preset, src: Path, out: Path, out_int8: Path):
    import onnx
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    spec = common.MODELS[preset]
    torch.set_num_threads(common.THREADS)
    model = getattr(transformers, spec["torch_class"]).from_pretrained(str(src)).eval()
    names = list(spec["torch_inputs"])

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(**dict(zip(names, args)), return_dict=True)
            return tuple(x for x in (out.last_hidden_state, getattr(out, "pooler_output", None)) if x is not None)

    sample = common.torch_inputs(preset, common.make_inputs(preset, 2, 16))
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    outputs = ["sequence_output"] + (["pooled_output"] if spec["head"] != "xlm" else [])
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["sequence_output"] = {0: "batch", 1: "sequence"}
    if "pooled_output" in outputs:
        axes["pooled_output"] = {0: "batch"}
    started = time.time()
    with torch.inference_mode():
        torch.onnx.export(Wrapper(model), args, str(out), input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    export_s = time.time() - started

    # Shared weights (ALBERT's one layer group) reach their MatMuls through Identity nodes, and
    # quantize_dynamic only quantizes a MatMul whose weight is an initializer: fold them away.
    graph = onnx.load(str(out))
    identities = {n.output[0]: n.input[0] for n in graph.graph.node
                  if n.op_type == "Identity" and n.output[0] not in {o.name for o in graph.graph.output}}
    kept = [n for n in graph.graph.node if not (n.op_type == "Identity" and n.output[0] in identities)]
    for node in kept:
        for k, name in enumerate(node.input):
            while name in identities:
                name = identities[name]
            node.input[k] = name
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    onnx.save(graph, str(out))
    matmuls = sum(n.op_type == "MatMul" for n in graph.graph.node)

    started = time.time()
    quantize_dynamic(str(out), str(out_int8), weight_type=QuantType.QInt8)
    quant_s = time.time() - started
    q = onnx.load(str(out_int8))
    ops = [n.op_type for n in q.graph.node]
    return {"export_s": round(export_s, 1), "quantize_s": round(quant_s, 1),
            "identity_nodes_folded": len(identities), "matmuls": matmuls,
            "matmuls_quantized": ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul"),
            "matmuls_float_after_quantization": ops.count("MatMul"),
            "bytes": out.stat().st_size, "bytes_int8": out_int8.stat().st_size}


def export_savedmodel(preset, model_dir: Path, out: Path):
    from kzoo.export import export_savedmodel as export

    report = export(model_dir, out, text=False, overwrite=True)
    return {"bytes": report["bytes"], "ok": report["ok"], "export_s": report["seconds"]}


def export_tflite(preset, model_dir: Path, out: Path, quantize: str):
    from kzoo.export import export_tflite as export

    report = export(model_dir, out, quantize=quantize, overwrite=True)
    ev = report["evaluation"]
    return {"bytes": report["bytes"], "ok": report["ok"], "export_s": report["seconds"],
            "integer_op_fraction": report.get("integer_op_fraction"), "metric": ev.get("metric"),
            "outputs": ev.get("outputs")}


def run_step(step, preset, cache):
    p = paths(cache, preset)
    p["dir"].mkdir(parents=True, exist_ok=True)
    if step == "reference":
        return build_reference(preset, p["reference"], p["head"])
    if step == "convert":
        return convert(preset, p["reference"], p["convert"])
    if step == "onnx":
        return export_onnx(preset, p["reference"], p["onnx"], p["onnx-int8"])
    if step == "savedmodel":
        return export_savedmodel(preset, p["convert"], p["savedmodel"])
    if step in TFLITE_MODES:
        return export_tflite(preset, p["convert"], p[step], TFLITE_MODES[step])
    raise SystemExit(f"unknown step {step!r}; steps: {', '.join(STEPS)}")


def main(argv=None):
    step, preset, cache = (argv or sys.argv[1:])[:3]
    common.set_thread_env()
    if step in ("convert", "savedmodel") or step.startswith("tflite"):
        import kzoo  # noqa: F401  (sets the Keras backend)
        from kzoo.cli.output import import_tensorflow_quietly

        import_tensorflow_quietly()
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(common.THREADS)
    base = common.reset_peak()
    started = time.time()
    result = run_step(step, preset, cache)
    result.update(seconds=round(time.time() - started, 1), peak_above_start=common.hwm() - base)
    stamp = {"key": stamp_key(step, preset), "result": result}
    common.write_json(_stamp_file(cache, preset, step), stamp)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
