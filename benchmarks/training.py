"""Training throughput and peak memory: kzoo train's step (XLA-compiled forward, backward, AdamW) against a
PyTorch eager loop with the same optimizer (torch.optim.AdamW, Trainer's parameter groups, clip_grad_norm_),
side by side in one run, each framework in its own process (its peak is its own).

    .venv/bin/python benchmarks/training.py [--presets albert-base-v2 xlm-roberta-base] [--steps 6]

Sequence classifiers of the published sizes (random weights, 2 labels), batch 16 x 128 tokens (random ids,
rows after the first padded to 64..128: common.make_inputs),
dropout as configured (0.1), learning rate 5e-5 with weight decay 0.01; the first 2 steps are warm-up
(kzoo: XLA compiles its programs there) and not timed. Writes benchmarks/results/training.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

BATCH, LENGTH, WARMUP = 16, 128, 2
CLASSES = {"albert": "AlbertForSequenceClassification", "xlm-roberta": "XLMRobertaForSequenceClassification"}


def prepare(out: Path, preset):
    """The Transformers classifier (random weights) and its kzoo conversion."""
    src, kz = out / preset / "hf", out / preset / "kzoo"
    if not (src / "config.json").exists():
        import torch
        import transformers

        torch.manual_seed(0)
        cls = getattr(transformers, CLASSES[common.family(preset).name])
        config = cls.config_class(**common.hf_config(preset), num_labels=2)
        cls(config).save_pretrained(src)
    if not (kz / "config.json").exists():
        subprocess.run([sys.executable, "-m", "kzoo", "convert", str(src), str(kz)], check=True)
    return src, kz


def batch(preset, seed):
    import numpy as np

    inputs = common.make_inputs(preset, BATCH, LENGTH, seed=seed)
    labels = np.random.default_rng(seed).integers(0, 2, BATCH).astype("int32")
    return inputs, labels


def run_torch(src, preset, steps):
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(common.THREADS)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(src).train()
    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    groups = [{"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=5e-5)
    seconds = []
    for step in range(WARMUP + steps):
        inputs, labels = batch(preset, step)
        feed = {k: torch.as_tensor(v) for k, v in common.torch_inputs(preset, inputs).items()}
        started = time.perf_counter()
        optimizer.zero_grad()
        loss = model(**feed, labels=torch.as_tensor(labels, dtype=torch.long)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds[WARMUP:], float(np.asarray(loss.item()))


def run_kzoo(kz, preset, steps):
    import tensorflow as tf

    import kzoo
    from kzoo.training import Trainer, TrainOptions

    model = kzoo.load(kz)
    trainer = Trainer(model, None, TrainOptions(learning_rate=5e-5, weight_decay=0.01))
    seconds = []
    for step in range(WARMUP + steps):
        inputs, labels = batch(preset, step)
        feed = {k: tf.constant(v) for k, v in inputs.items() if k in model.input}
        started = time.perf_counter()
        loss, _ = trainer.step([(feed, tf.constant(labels))], 5e-5)
        seconds.append(time.perf_counter() - started)
    return seconds[WARMUP:], loss


def child(args):
    """One framework's run in this process: prints {"seconds", "peak_rss", "loss"} as JSON."""
    common.set_thread_env()
    src, kz = Path(args.out) / args.preset / "hf", Path(args.out) / args.preset / "kzoo"
    run = run_torch if args.engine == "torch" else run_kzoo
    seconds, loss = run(src if args.engine == "torch" else kz, args.preset, args.steps)
    print(json.dumps({"seconds": seconds, "peak_rss": common.hwm(), "loss": loss}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["albert-base-v2", "xlm-roberta-base"])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", default="out/bench-training")
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:
        return child(args)
    import statistics

    from run import machine_info

    rows = []
    for preset in args.presets:
        prepare(Path(args.out), preset)
        result = {}
        for engine in ("torch", "kzoo"):
            common.log(f"{engine}: {preset}")
            result[engine] = common.run_child(__file__, ["--engine", engine, "--preset", preset, "--steps", args.steps,
                                                         "--out", args.out], f"{engine} {preset}")
        step = {e: statistics.median(result[e]["seconds"]) for e in result}
        rows.append({"preset": preset, "batch": BATCH, "tokens": LENGTH, "steps_timed": args.steps,
                     **{f"{e}_step_seconds": step[e] for e in step},
                     **{f"{e}_examples_per_second": BATCH / step[e] for e in step},
                     **{f"{e}_peak_gib": result[e]["peak_rss"] / 2**30 for e in result},
                     "step_time_ratio_kzoo_to_torch": step["kzoo"] / step["torch"]})
        common.log(json.dumps(rows[-1]))
    machine = machine_info()
    report = {"machine": machine, "rows": rows}
    lines = ["# Training: one optimizer step, kzoo train (XLA) vs a PyTorch eager loop", "",
             f"{machine.get('cpu')}, {machine.get('cores', '?')} cores, {common.THREADS} threads, CPU flags "
             f"{' '.join(machine.get('isa', []))}", "",
             f"Sequence classifiers, batch {BATCH} x {LENGTH} tokens, AdamW (decay groups), clipping at 1.0; median of "
             f"{args.steps} steps after {WARMUP} warm-up steps; peak: the process's resident memory.", "",
             "| model | PyTorch s/step | kzoo s/step | kzoo / PyTorch | PyTorch ex/s | kzoo ex/s | PyTorch peak GiB | "
             "kzoo peak GiB |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['torch_step_seconds']:.2f} | {r['kzoo_step_seconds']:.2f} | "
                     f"{r['step_time_ratio_kzoo_to_torch']:.2f} | {r['torch_examples_per_second']:.1f} | "
                     f"{r['kzoo_examples_per_second']:.1f} | {r['torch_peak_gib']:.2f} | {r['kzoo_peak_gib']:.2f} |")
    common.write_results("training", report, lines)


if __name__ == "__main__":
    main()
