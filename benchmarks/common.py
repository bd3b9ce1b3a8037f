"""What the harness's processes share: the models, their inputs, FLOP counts, memory probes.

Imports numpy and kzoo's config modules only (no TensorFlow, no torch), so every worker can use it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` from a checkout
    sys.path.insert(0, str(ROOT))

THREADS = 2
SEED = 0

# The presets benchmarked (one per family) and how each one's reference is built and fed: read from
# the declarations (kzoo.families, the family's converter). `torch_class` is Transformers' backbone
# class (the encoder every task shares); `head` (the family's name) picks the masked-LM head used
# only to score top-1 agreement (run.py), and the per-family formulas of `parameter_count` and
# `matmul_flops` below (a new family adds its own there).
BENCHMARKED = ("albert-base-v2", "xlm-roberta-base", "xlm-mlm-enfr-1024")
CONVERSION_PRESET = "xlm-roberta-large"


def family(preset):
    from kzoo.families import FAMILIES, PRESETS

    return FAMILIES[PRESETS[preset]["architecture"]]


def describe(preset):
    from kzoo.converters import spec_of

    fam = family(preset)
    spec = spec_of(fam)
    hf = spec.hf_config(backbone(preset))
    return dict(
        converter=spec.__name__, model_type=spec.MODEL_TYPE,
        torch_class=next(cls for cls, task in spec.TASK_OF_CLASS.items() if task == "backbone"),
        pad_id=int(hf.get("pad_token_id") or 0), first_id=5, head=fam.name,
        # Transformers feeds XLM's languages (`langs`), the others' token types
        torch_inputs=("input_ids", "attention_mask", "langs" if fam.languages else "token_type_ids"),
    )


def backbone(preset):
    from kzoo.families import PRESETS

    return PRESETS[preset]["backbone"]


MODELS = {preset: describe(preset) for preset in BENCHMARKED}  # (the declarations import without TF / torch)


def hf_config(preset):
    from kzoo.converters import spec_of

    return spec_of(family(preset)).hf_config(backbone(preset))


def config_class(preset):
    """Transformers' config class for the preset's model_type (e.g. AlbertConfig)."""
    import transformers

    return transformers.CONFIG_MAPPING[describe(preset)["model_type"]]


# --- inputs -------------------------------------------------------------------------------------


def make_inputs(preset, batch, seq, seed=SEED):
    """kzoo inputs (int32 [B, S]): random real tokens; rows after the first padded at the end
    (lengths spread over [S/2, S]) so fidelity covers the mask. Timing sees the same shapes."""
    spec, cfg = MODELS[preset], backbone(preset)
    rng = np.random.default_rng(seed + 1000 * batch + seq)
    ids = rng.integers(spec["first_id"], cfg["vocabulary_size"], size=(batch, seq)).astype("int32")
    lengths = np.full(batch, seq)
    if batch > 1:
        lengths[1:] = rng.integers(seq // 2, seq + 1, size=batch - 1)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype("int32")
    ids = np.where(mask == 1, ids, spec["pad_id"]).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": mask}
    if spec["head"] == "xlm":
        # Transformers' XLM tokenizer gives no token types; kzoo's "not given" is -1. Language 0 (en).
        inputs["segment_ids"] = np.full_like(ids, -1)
        inputs["lang_ids"] = np.zeros_like(ids)
    else:
        inputs["segment_ids"] = np.zeros_like(ids)
    return inputs


def torch_inputs(preset, inputs):
    """kzoo inputs -> the Transformers / ONNX names (int64)."""
    spec = MODELS[preset]
    names = {"input_ids": "token_ids", "attention_mask": "padding_mask", "token_type_ids": "segment_ids",
             "langs": "lang_ids"}
    return {name: inputs[names[name]].astype("int64") for name in spec["torch_inputs"]}


# --- FLOPs --------------------------------------------------------------------------------------


def matmul_flops(preset, batch, seq):
    """Multiply-adds x 2 of every matmul in the backbone's forward pass (what the timings run):
    the projections, the two attention products, ALBERT's embedding projection, the pooler."""
    cfg = backbone(preset)
    h, i, layers = cfg["hidden_dim"], cfg["intermediate_dim"], cfg["num_layers"]
    tokens = batch * seq
    per_layer = 2 * tokens * (4 * h * h + 2 * h * i) + 2 * 2 * batch * seq * seq * h
    total = layers * per_layer
    if "embedding_dim" in cfg:  # ALBERT: embedding_dim -> hidden_dim projection
        total += 2 * tokens * cfg["embedding_dim"] * h
    if MODELS[preset]["head"] in ("albert", "xlm-roberta"):  # AlbertModel / XLMRobertaModel's pooler
        total += 2 * batch * h * h
    return total


def parameter_count(preset):
    """fp32 weights of the backbone (embeddings included), from the kzoo config."""
    cfg = backbone(preset)
    h, i, layers, v = cfg["hidden_dim"], cfg["intermediate_dim"], cfg["num_layers"], cfg["vocabulary_size"]
    block = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
    head = MODELS[preset]["head"]
    if head == "albert":
        e = cfg["embedding_dim"]
        emb = (v + cfg["max_sequence_length"] + cfg["num_segments"]) * e + 2 * e + e * h + h
        return emb + block * cfg["num_groups"] * cfg["num_inner_repetitions"] + h * h + h
    if head == "xlm-roberta":
        emb = (v + cfg["max_sequence_length"] + cfg["num_segments"]) * h + 2 * h
        return emb + layers * block + h * h + h
    emb = (v + cfg["max_sequence_length"] + cfg["num_languages"]) * h + 2 * h
    return emb + layers * block


# --- memory -------------------------------------------------------------------------------------


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss():
    return _status("VmRSS")


def hwm():
    return _status("VmHWM")


def reset_peak():
    """Resets VmHWM to the current RSS (Linux clear_refs 5); returns the RSS it starts from."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return rss()


def set_thread_env():
    """Before any framework import: every library uses THREADS threads."""
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[key] = str(THREADS)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_child(script, args, what):
    """`script args` in a fresh process (so that its peak memory, `hwm`, is its own: getrusage's ru_maxrss
    would carry the parent's across fork + exec); its last stdout line, parsed as JSON."""
    import subprocess

    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode:
        raise SystemExit(f"{what}: failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_results(name, report, lines):
    """benchmarks/results/<name>.json (the report) and <name>.md (`lines`), and the table printed."""
    results = Path(__file__).resolve().parent / "results"
    write_json(results / f"{name}.json", report)
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
