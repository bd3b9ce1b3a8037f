"""kzoo benchmarks: one command, every runtime side by side in one run.

    .venv/bin/python benchmarks/run.py            # the full run (~30 min here; exports are cached in out/bench/)
    .venv/bin/python benchmarks/run.py --quick    # albert-base-v2 only, fewer runs (development)
    bash scripts/bench.sh [ARGS]                  # the same, after creating the venv with the bench extra

Measures full-size albert-base-v2, xlm-roberta-base and xlm-mlm-enfr-1024 (the backbones, random
weights, exact preset configs) at batch 1 and 8, sequence 128, two threads, through PyTorch eager,
ONNX Runtime fp32 / dynamic int8, kzoo under tf.function / XLA / the SavedModel's serving_default,
and TFLite fp32 / fp16 / dynamic-int8 / int8 (LiteRT). Each variant runs in its own process (its
load's memory measured in isolation); the processes take turns, one timed run each per round, in
rotating order, so drift in the machine's speed hits every variant alike. Then: scaling (sequence x
batch) for kzoo XLA and TFLite int8 on albert-base-v2, conversion of a full-size xlm-roberta-large
checkpoint, and the targets. Writes benchmarks/results/latest.{json,md,png}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import prepare  # noqa: E402
from worker import TF_VARIANTS, VARIANTS  # noqa: E402

HERE = Path(__file__).resolve().parent
PY = sys.executable
FP32 = ("torch", "ort-fp32", "kzoo-function", "kzoo-xla", "savedmodel", "tflite-fp32")
SCALING_VARIANTS = ("kzoo-xla", "tflite-int8")
SCALING_SEQ = (32, 128, 512)
SCALING_BATCH = (1, 8, 32)
LABELS = {
    "torch": "PyTorch eager", "ort-fp32": "ONNX Runtime fp32", "ort-int8": "ONNX Runtime int8 (dynamic)",
    "kzoo-function": "kzoo tf.function", "kzoo-xla": "kzoo XLA", "savedmodel": "SavedModel serving_default (XLA)",
    "tflite-fp32": "TFLite fp32", "tflite-fp16": "TFLite fp16", "tflite-dynamic-int8": "TFLite dynamic-int8",
    "tflite-int8": "TFLite int8",
}
STEP_OF = {"torch": "reference", "ort-fp32": "onnx", "ort-int8": "onnx", "kzoo-function": "convert",
           "kzoo-xla": "convert", "savedmodel": "savedmodel", **{v: v for v in prepare.TFLITE_MODES}}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the machine --------------------------------------------------------------------------------


def machine_info():
    import importlib.metadata as md

    cpu = platform.processor()
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = {}
    for pkg in ("tensorflow", "keras", "keras-hub", "ai-edge-litert", "torch", "transformers", "onnx",
                "onnxruntime", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
        "isa": sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                                 "amx_tile", "amx_int8")),
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
        "versions": versions, "threads": common.THREADS,
    }


def load_average():
    return os.getloadavg()[0]


def wait_quiet(limit_s, threshold):
    """Waits (up to limit_s) until the 1-minute load average is under threshold; returns it."""
    started = time.time()
    load = load_average()
    while load > threshold and time.time() - started < limit_s:
        log(f"load average {load:.2f} > {threshold}: waiting for a quiet machine")
        time.sleep(30)
        load = load_average()
    return load


MATMUL = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import common
common.set_thread_env()
import numpy as np
n, reps = 2048, int(sys.argv[2])
flops = 2 * n ** 3
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
def timeit(fn):
    fn(); fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); out.append(time.perf_counter() - t0)
    return out
res = {"numpy": timeit(lambda: a @ b)}
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(common.THREADS)
tf.config.threading.set_inter_op_parallelism_threads(1)
ta, tb = tf.constant(a), tf.constant(b)
res["tensorflow"] = timeit(lambda: tf.linalg.matmul(ta, tb).numpy())
print(json.dumps({k: {"times": v, "median_s": float(np.median(v)), "gflops": flops / float(np.median(v)) / 1e9}
                  for k, v in res.items()}))
"""


def measure_matmul(reps):
    out = subprocess.run([PY, "-c", MATMUL, str(HERE), str(reps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- preparing the artifacts --------------------------------------------------------------------


def prepare_all(presets, cache, steps, rebuild, logs):
    results = {}
    for preset in presets:
        results[preset] = {}
        for step in steps:
            if not rebuild and prepare.is_fresh(cache, preset, step):
                results[preset][step] = {**prepare.read_stamp(cache, preset, step)["result"], "cached": True}
                continue
            log(f"prepare {preset}: {step}")
            with open(logs / f"prepare-{preset}-{step}.log", "w") as err:
                out = subprocess.run([PY, str(HERE / "prepare.py"), step, preset, str(cache)],
                                     stdout=subprocess.PIPE, stderr=err, text=True)
            if out.returncode:
                raise SystemExit(f"prepare {step} {preset} failed; see {logs}/prepare-{preset}-{step}.log")
            results[preset][step] = {**json.loads(out.stdout.strip().splitlines()[-1]), "cached": False}
    return results


# --- workers ------------------------------------------------------------------------------------


class Worker:
    def __init__(self, variant, preset, cache, logs, env=None, name=None):
        self.variant = name or variant
        self.err = open(logs / f"worker-{preset}-{self.variant}.log", "w")
        self.proc = subprocess.Popen([PY, str(HERE / "worker.py"), variant, preset, str(cache)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     bufsize=1, env={**os.environ, **(env or {})})
        self.loaded = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.variant} died; see {self.err.name}")
        msg = json.loads(line)
        if not msg.get("ok"):
            raise RuntimeError(f"worker {self.variant}: {msg.get('error')}")
        return msg

    def ask(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            final = self.ask(cmd="exit")
        except Exception:  # noqa: BLE001
            final = {}
        self.proc.wait(timeout=60)
        self.err.close()
        return final


PAUSE_S = 0.05  # between two variants' runs: lets spinning thread pools (OpenMP, ORT) go idle


def interleaved(workers, runs, shape, warmup, seed=0):
    """Warm every worker up at `shape`, then `runs` rounds; in each round every worker, in a shuffled
    order, makes one run after idling (recorded as "cold") and then one timed run (the latency)."""
    import random

    order_rng = random.Random(seed)
    first = {}
    for w in workers:
        first[w.variant] = w.ask(cmd="shape", batch=shape[0], seq=shape[1], warmup=warmup)
    times = {w.variant: [] for w in workers}
    cold = {w.variant: [] for w in workers}
    for _ in range(runs):
        order = list(workers)
        order_rng.shuffle(order)
        for w in order:
            time.sleep(PAUSE_S)
            answer = w.ask(cmd="time", n=1, warm=1)
            times[w.variant].append(answer["times"][0])
            cold[w.variant].append(answer["cold"][0])
    return first, times, cold


def paired_ratio(times, ref):
    """Median over rounds of t / t_ref in the same round (robust to the machine's drift)."""
    return float(np.median(np.asarray(times) / np.asarray(ref)))


def bench_model(preset, variants, cache, logs, runs, batches, seq, dumps):
    log(f"{preset}: starting {len(variants)} workers (each loads alone)")
    workers, result = [], {}
    try:
        for v in variants:
            w = Worker(v, preset, cache, logs)
            workers.append(w)
            result[v] = {"load_s": w.loaded["load_s"], "load_peak": w.loaded["load_peak"],
                         "baseline_rss": w.loaded["baseline_rss"], "batches": {}}
        for batch in batches:
            t0 = time.time()
            first, times, cold = interleaved(workers, runs, (batch, seq), warmup=2, seed=batch)
            flops = common.matmul_flops(preset, batch, seq)
            for v in variants:
                med = float(np.median(times[v]))
                row = {"times": times[v], "median_s": med, "first_s": first[v]["first_s"],
                       "cold_times": cold[v], "cold_median_s": float(np.median(cold[v])),
                       "rss_after_warmup": first[v]["rss"], "gflops": flops / med / 1e9,
                       "load_average_after": load_average(),
                       "vs_torch": paired_ratio(times[v], times["torch"]) if "torch" in times else None,
                       "vs_ort_fp32": paired_ratio(times[v], times["ort-fp32"]) if "ort-fp32" in times else None}
                if batch == batches[0]:
                    result[v]["ready_peak"] = first[v]["peak"]  # load + first run at the first batch size
                result[v]["batches"][str(batch)] = row
            log(f"{preset} batch {batch}: {runs} rounds in {time.time() - t0:.0f} s, load {load_average():.2f}; "
                + ", ".join(f"{v} {1000 * float(np.median(times[v])):.0f} ms" for v in variants))
            if batch == max(batches):
                for w in workers:
                    w.ask(cmd="dump", path=str(dumps / f"{preset}-{w.variant}.npz"))
    finally:
        for w in workers:
            final = w.close()
            if w.variant in result and final:
                result[w.variant]["peak"] = final.get("peak")
    return result


def bench_scaling(preset, cache, logs, max_runs, budget_s):
    """kzoo XLA and TFLite int8 over sequence x batch; runs per shape adapt to the shape's cost."""
    workers = [Worker(v, preset, cache, logs) for v in SCALING_VARIANTS]
    rows = []
    try:
        for seq, batch in itertools.product(SCALING_SEQ, SCALING_BATCH):
            # The first call (XLA compiles) and one timed run size the shape; expensive shapes get no
            # further warm-up and as few as 3 runs (the probe counts as the first).
            first = {w.variant: w.ask(cmd="shape", batch=batch, seq=seq, warmup=0) for w in workers}
            times = {w.variant: [] for w in workers}
            for w in workers:
                time.sleep(PAUSE_S)
                t = w.ask(cmd="time", n=1)["times"][0]
                if t < 2.0:  # cheap: one more warm-up, then start counting
                    t = w.ask(cmd="time", n=1)["times"][0]
                times[w.variant].append(t)
            per_round = sum(t[0] for t in times.values()) + PAUSE_S * len(workers)
            runs = int(max(3, min(max_runs, budget_s // per_round)))
            warm = 1 if per_round < 4.0 else 0  # cheap shapes: a run after idling, then the timed one
            for r in range(1, runs):
                for w in (workers if r % 2 == 0 else workers[::-1]):
                    time.sleep(PAUSE_S)
                    times[w.variant].append(w.ask(cmd="time", n=1, warm=warm)["times"][0])
            flops = common.matmul_flops(preset, batch, seq)
            for v in SCALING_VARIANTS:
                med = float(np.median(times[v]))
                rows.append({"variant": v, "seq": seq, "batch": batch, "runs": runs, "median_s": med,
                             "first_s": first[v]["first_s"], "gflops": flops / med / 1e9,
                             "us_per_token": 1e6 * med / (seq * batch), "times": times[v]})
            log(f"scaling {preset} seq {seq} batch {batch}: "
                + ", ".join(f"{v} {1000 * float(np.median(times[v])):.0f} ms" for v in SCALING_VARIANTS)
                + f" ({runs} runs)")
    finally:
        for w in workers:
            w.close()
    return {"preset": preset, "rows": rows}


# --- conversion ---------------------------------------------------------------------------------

CONVERT = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import common
common.set_thread_env()
import kzoo
from kzoo.cli.output import import_tensorflow_quietly
import_tensorflow_quietly()
from kzoo.converters.convert import convert
from kzoo.converters.readers import open_checkpoint
from kzoo.models import build_model
# TF's first Keras build costs ~150 MB once, whatever the model's size: the framework's baseline.
build_model({"architecture": "albert", "task": "masked_lm", "backbone": {
    "vocabulary_size": 10, "num_layers": 1, "num_heads": 1, "hidden_dim": 4, "intermediate_dim": 4,
    "embedding_dim": 4}})
base = common.reset_peak()
t0 = time.perf_counter()
if sys.argv[2] == "convert":
    summary = convert(sys.argv[3], sys.argv[4], overwrite=True)
    with open_checkpoint(sys.argv[3]) as ckpt:
        size = ckpt.nbytes
    extra = {"parameters": summary["parameters"], "checkpoint_bytes": size, "format": summary["checkpoint_format"]}
else:
    model = kzoo.load(sys.argv[3])
    extra = {"parameters": model.count_params()}
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "baseline_rss": base, "peak": common.hwm() - base,
                  "rss": common.rss() - base, **extra}))
"""


def bench_conversion(cache, logs, rebuild, measure=True):
    preset = common.CONVERSION_PRESET
    d = Path(cache) / preset
    src, out = d / "reference", d / "kzoo"
    stamp = d / ".conversion-reference.stamp.json"
    key = json.loads(json.dumps(prepare.stamp_key("conversion-reference", preset)))
    if rebuild or not stamp.exists() or json.loads(stamp.read_text()).get("key") != key:
        log(f"building the {preset} reference checkpoint (XLMRobertaForMaskedLM, random weights)")
        code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import prepare, pathlib; "
                f"print(prepare.build_reference({preset!r}, pathlib.Path({str(src)!r}), "
                "torch_class='XLMRobertaForMaskedLM'))")
        with open(logs / "conversion-reference.log", "w") as err:
            subprocess.run([PY, "-c", code], check=True, stdout=err, stderr=err)
        common.write_json(stamp, {"key": key})
    if not measure:
        return None
    results = {}
    for what, args in (("convert", [str(src), str(out)]), ("load", [str(out)])):
        log(f"{preset}: {what} (peak memory above a warmed-up TF baseline)")
        with open(logs / f"conversion-{what}.log", "w") as err:
            res = subprocess.run([PY, "-c", CONVERT, str(HERE), what, *args], stdout=subprocess.PIPE, stderr=err,
                                 text=True, check=True)
        results[what] = json.loads(res.stdout.strip().splitlines()[-1])
    conv = results["convert"]
    conv["peak_over_checkpoint"] = conv["peak"] / conv["checkpoint_bytes"]
    load = results["load"]
    load["fp32_weight_bytes"] = 4 * load["parameters"]
    load["peak_over_weights"] = load["peak"] / load["fp32_weight_bytes"]
    return {"preset": preset, "checkpoint_bytes": conv["checkpoint_bytes"], "convert": conv, "load": load}


# --- fidelity -----------------------------------------------------------------------------------


def _gelu(x, exact):
    if exact:
        from math import erf

        return 0.5 * x * (1.0 + np.vectorize(erf, otypes=[np.float32])(x / np.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def head_top1(preset, cache, seq_out):
    """Masked-LM top-1 ids per position: the (random, fixed) fp32 head on the encoder's output."""
    from safetensors.numpy import load_file

    p = prepare.paths(cache, preset)
    head = dict(np.load(p["head"]))
    weights = load_file(str(next(p["reference"].glob("*.safetensors"))))
    table = next(v for k, v in weights.items()
                 if k.endswith("word_embeddings.weight") or k.split(".", 1)[-1] == "embeddings.weight"
                 or k == "embeddings.weight")
    kind = common.MODELS[preset]["head"]
    cfg = common.backbone(preset)
    x = seq_out.astype("float32")
    if kind != "xlm":
        x = _gelu(x @ head["kernel"] + head["dense_bias"], exact=kind == "xlm-roberta")
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        x = (x - mean) / np.sqrt(var + cfg["layer_norm_epsilon"]) * head["gamma"] + head["beta"]
    ids = np.empty(len(x), "int64")
    for start in range(0, len(x), 256):
        ids[start:start + 256] = np.argmax(x[start:start + 256] @ table.T + head["bias"], axis=-1)
    return ids


def fidelity(preset, cache, dumps, variants):
    inputs = common.make_inputs(preset, 8, 128)
    keep = inputs["padding_mask"].astype(bool)
    ref = dict(np.load(dumps / f"{preset}-torch.npz"))
    ref_seq = ref["sequence_output"][keep]
    ref_top = head_top1(preset, cache, ref_seq)
    out = {}
    for v in variants:
        file = dumps / f"{preset}-{v}.npz"
        if not file.exists():
            continue
        got = dict(np.load(file))
        seq = got["sequence_output"][keep].astype("float64")
        diffs = [float(np.max(np.abs(seq - ref_seq)))]
        if "pooled_output" in ref and "pooled_output" in got:
            diffs.append(float(np.max(np.abs(got["pooled_output"] - ref["pooled_output"]))))
        cos = np.sum(seq * ref_seq, -1) / (np.linalg.norm(seq, axis=-1) * np.linalg.norm(ref_seq, axis=-1))
        out[v] = {"max_abs_diff": max(diffs), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                  "top1_agreement": float(np.mean(head_top1(preset, cache, seq) == ref_top)),
                  "positions": int(keep.sum())}
    return out


# --- sizes --------------------------------------------------------------------------------------


def artifact_bytes(preset, cache, variant):
    p = prepare.paths(cache, preset)
    if variant == "torch":
        return sum(f.stat().st_size for f in p["reference"].glob("*.safetensors"))
    if variant == "ort-fp32":
        return p["onnx"].stat().st_size
    if variant == "ort-int8":
        return p["onnx-int8"].stat().st_size
    if variant in ("kzoo-function", "kzoo-xla"):
        return (p["convert"] / "model.weights.h5").stat().st_size
    if variant == "savedmodel":
        return sum(f.stat().st_size for f in p["savedmodel"].rglob("*") if f.is_file())
    return p[variant].stat().st_size


# --- targets ------------------------------------------------------------------------------------


def targets(data):
    rows = []
    models = data["models"]
    peak = data["matmul_peak"]["peak_gflops"]

    def add(name, measured, bound, met, detail):
        rows.append({"target": name, "measured": measured, "bound": bound, "met": bool(met), "detail": detail})

    for preset, m in models.items():
        v = m["variants"]
        if "kzoo-xla" in v and "ort-fp32" in v:
            for b in m["batches"]:
                r = v["kzoo-xla"]["batches"][b]["vs_ort_fp32"]
                add(f"{preset} kzoo XLA vs ONNX Runtime fp32, batch {b}", round(r, 4), "<= 0.95", r <= 0.95,
                    f"{1000 * v['kzoo-xla']['batches'][b]['median_s']:.1f} ms vs "
                    f"{1000 * v['ort-fp32']['batches'][b]['median_s']:.1f} ms")
        b = str(max(int(x) for x in m["batches"]))
        if "kzoo-xla" in v:
            rate = v["kzoo-xla"]["batches"][b]["gflops"]
            others = {k: v[k]["batches"][b]["gflops"] for k in ("kzoo-function", "savedmodel", "tflite-fp32") if k in v}
            add(f"{preset} kzoo XLA fp32 throughput at batch {b}", round(rate / peak, 4), ">= 0.90 of matmul peak",
                rate / peak >= 0.9, f"{rate:.0f} of {peak:.0f} GFLOP/s; "
                + ", ".join(f"{LABELS[k]} {r / peak:.2f}" for k, r in others.items()))
        if "tflite-dynamic-int8" in v and "ort-int8" in v:
            fid = m["fidelity"].get("tflite-dynamic-int8", {})
            cos = fid.get("cosine_mean", float("nan"))
            for b in m["batches"]:
                r = paired_ratio(v["tflite-dynamic-int8"]["batches"][b]["times"], v["ort-int8"]["batches"][b]["times"])
                add(f"{preset} TFLite dynamic-int8 vs ONNX Runtime int8, batch {b}", round(r, 4),
                    "<= 0.90 and cosine >= 0.999", r <= 0.9 and cos >= 0.999,
                    f"cosine mean {cos:.5f} (min {fid.get('cosine_min', float('nan')):.4f}) vs fp32")
        if "kzoo-xla" in v:
            ratio = v["kzoo-xla"]["load_peak"] / m["fp32_weight_bytes"]
            add(f"{preset} kzoo.load peak / fp32 weights", round(ratio, 4), "<= 1.5", ratio <= 1.5,
                f"{v['kzoo-xla']['load_peak'] / 2**20:.0f} MiB above the TF baseline for "
                f"{m['fp32_weight_bytes'] / 2**20:.0f} MiB of weights")
    conv = data.get("conversion")
    if conv:
        r = conv["convert"]["peak_over_checkpoint"]
        add(f"{conv['preset']} conversion peak / checkpoint size", round(r, 4), "<= 2.0", r <= 2.0,
            f"{conv['convert']['peak'] / 2**30:.2f} GiB above baseline for a {conv['checkpoint_bytes'] / 2**30:.2f} "
            f"GiB checkpoint, {conv['convert']['seconds']:.0f} s")
        r = conv["load"]["peak_over_weights"]
        add(f"{conv['preset']} kzoo.load peak / fp32 weights", round(r, 4), "<= 1.5", r <= 1.5,
            f"{conv['load']['peak'] / 2**30:.2f} GiB above baseline, {conv['load']['seconds']:.0f} s")
    return rows


# --- main ---------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="albert-base-v2 only, 5 runs, small scaling grid")
    parser.add_argument("--models", nargs="+", choices=sorted(common.MODELS), help="default: all three")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="default: all")
    parser.add_argument("--runs", type=int, help="timed runs per variant and batch (default 15; --quick 5)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--no-conversion", action="store_true")
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached checkpoints and exports")
    parser.add_argument("--update-readme", action="store_true",
                        help="rewrite README.md's Benchmarks section (between its markers) from this run")
    parser.add_argument("--prepare-only", action="store_true", help="build (or check) the cached artifacts, time nothing")
    parser.add_argument("--cache", default=str(common.ROOT / "out" / "bench"), help="default: out/bench")
    parser.add_argument("--results", default=str(HERE / "results"), help="default: benchmarks/results")
    parser.add_argument("--name", default="latest", help="result file names (default: latest)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="MIN",
                        help="wait up to MIN minutes for the load average to drop under 0.5 before timing")
    args = parser.parse_args(argv)

    runs = args.runs or (5 if args.quick else 15)
    presets = args.models or (["albert-base-v2"] if args.quick else list(common.MODELS))
    variants = args.variants or list(VARIANTS)
    if "torch" not in variants:
        variants = ["torch", *variants]  # the reference for ratios and fidelity
    cache = Path(args.cache)
    results_dir = Path(args.results)
    logs = cache / "logs"
    dumps = cache / "dumps"
    for d in (logs, dumps, results_dir):
        d.mkdir(parents=True, exist_ok=True)
    started = time.time()

    data = {"machine": machine_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "settings": {"runs": runs, "warmup": 2, "seq": args.seq, "batches": args.batches, "threads": common.THREADS,
                         "quick": args.quick, "command": " ".join(["benchmarks/run.py", *(argv or sys.argv[1:])])}}
    steps = sorted({STEP_OF[v] for v in variants}, key=prepare.STEPS.index)
    steps = sorted(set(steps) | {"reference", "convert"}, key=prepare.STEPS.index)
    data["prepare"] = prepare_all(presets, cache, steps, args.rebuild, logs)
    if args.prepare_only:
        if not args.no_conversion:
            bench_conversion(cache, logs, args.rebuild, measure=False)
        log("artifacts ready")
        return

    if args.wait_quiet:
        waited = time.time()
        wait_quiet(60 * args.wait_quiet, 0.5)
        data["settings"]["waited_s"] = round(time.time() - waited)
        started += time.time() - waited  # the run's own time excludes the wait
    data["settings"]["load_average_at_start"] = load_average()
    log(f"matmul peak (2048^3 fp32, numpy and TF, {common.THREADS} threads)")
    peak_runs = [measure_matmul(5 if args.quick else 10)]

    data["models"] = {}
    for preset in presets:
        result = bench_model(preset, variants, cache, logs, runs, args.batches, args.seq, dumps)
        fid = fidelity(preset, cache, dumps, variants)
        params = common.parameter_count(preset)
        for v in variants:
            result[v]["file_bytes"] = artifact_bytes(preset, cache, v)
        data["models"][preset] = {
            "parameters": params, "fp32_weight_bytes": 4 * params,
            "flops": {str(b): common.matmul_flops(preset, b, args.seq) for b in args.batches},
            "batches": [str(b) for b in args.batches], "variants": result, "fidelity": fid,
        }
        common.write_json(results_dir / f"{args.name}.partial.json", data)

    if not args.no_scaling:
        preset = "albert-base-v2"
        prepare_all([preset], cache, ["reference", "convert", "tflite-int8"], False, logs)
        budget = 4.0 if args.quick else 12.0
        data["scaling"] = bench_scaling(preset, cache, logs, 3 if args.quick else 10, budget)

    peak_runs.append(measure_matmul(5 if args.quick else 10))
    data["matmul_peak"] = _peak(peak_runs)
    if not args.no_conversion:
        data["conversion"] = bench_conversion(cache, logs, args.rebuild)
    data["targets"] = targets(data)
    data["settings"]["load_average_at_end"] = load_average()
    data["seconds"] = round(time.time() - started)
    import report

    report.write(data, results_dir, args.name)
    if args.update_readme:
        report.update_readme(data, common.ROOT / "README.md")
    (results_dir / f"{args.name}.partial.json").unlink(missing_ok=True)
    log(f"done in {data['seconds'] / 60:.1f} min: {results_dir}/{args.name}.{{json,md,png}}")


def _peak(runs):
    out = {}
    for lib in ("numpy", "tensorflow"):
        times = [t for r in runs for t in r[lib]["times"]]
        med = float(np.median(times))
        out[lib] = {"median_s": med, "gflops": 2 * 2048 ** 3 / med / 1e9, "runs": len(times)}
    out["peak_gflops"] = max(out[lib]["gflops"] for lib in ("numpy", "tensorflow"))
    return out


if __name__ == "__main__":
    main()
