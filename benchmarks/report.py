"""Benchmark results -> NAME.json, NAME.md (tables) and NAME.png (plot) in the results dir.

    python benchmarks/report.py benchmarks/results/latest.json   # re-render the .md and .png from a .json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LABELS = {
    "torch": "PyTorch eager", "ort-fp32": "ONNX Runtime fp32", "ort-int8": "ONNX Runtime int8 (dynamic)",
    "kzoo-function": "kzoo tf.function", "kzoo-xla": "kzoo XLA (jit_compile)",
    "savedmodel": "SavedModel serving_default", "tflite-fp32": "TFLite fp32", "tflite-fp16": "TFLite fp16",
    "tflite-dynamic-int8": "TFLite dynamic-int8", "tflite-int8": "TFLite int8",
}
QUANTIZED = ("ort-int8", "tflite-fp16", "tflite-dynamic-int8", "tflite-int8")


def mib(n):
    return f"{n / 2**20:,.0f}" if n is not None else "-"


def _fid(f, variant):
    if not f:
        return "-"
    if variant not in QUANTIZED:
        return f"{f['max_abs_diff']:.1e}"
    return f"cos {f['cosine_mean']:.5f} (min {f['cosine_min']:.4f}), top-1 {100 * f['top1_agreement']:.1f}%"


def markdown(data):
    m = data["machine"]
    s = data["settings"]
    peak = data["matmul_peak"]
    v = m["versions"]
    lines = [
        f"# kzoo benchmarks ({data['started']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}), {m['memory_gib']} GiB, {m['os']}; "
        f"Python {m['python']}, TensorFlow {v['tensorflow']}, Keras {v['keras']}, LiteRT {v['ai-edge-litert']}, "
        f"PyTorch {v['torch']}, Transformers {v['transformers']}, ONNX Runtime {v['onnxruntime']}. "
        f"{s['threads']} threads everywhere. Load average {s.get('load_average_at_start', 0):.2f} at the start, "
        f"{s.get('load_average_at_end', 0):.2f} at the end.",
        "",
        f"Backbones with random weights (exact preset configs), sequence {s['seq']}, median of {s['runs']} timed "
        f"runs after {s['warmup']} warm-up runs. Variants interleaved: each round visits every variant once, in "
        "a shuffled order; a visit is one run right after idling (the other variants' turns; its median in "
        "brackets) and then the timed run. Ratios are medians of per-round ratios. GFLOP/s counts the model's matmuls analytically; matmul peak = "
        f"2048³ fp32 matmul: numpy {peak['numpy']['gflops']:.0f}, TensorFlow {peak['tensorflow']['gflops']:.0f} "
        f"GFLOP/s (peak {peak['peak_gflops']:.0f}). Memory: peak RSS of loading, above the framework's own "
        "baseline (imports + a first tiny model); *ready* adds the first run at batch 1 (XLA compile, TFLite "
        "weight packing). Fidelity on batch 8 (padded rows; non-pad positions): max abs diff vs PyTorch for "
        "fp32 paths; for quantized paths cosine vs PyTorch fp32 per position (mean, min) and top-1 agreement "
        "of a fixed fp32 masked-LM head applied to the output.",
        "",
    ]
    for preset, model in data["models"].items():
        batches = model["batches"]
        lines += [f"## {preset} ({model['parameters'] / 1e6:.1f} M parameters, "
                  f"{model['fp32_weight_bytes'] / 2**20:.0f} MiB fp32; "
                  + ", ".join(f"{model['flops'][b] / 1e9:.1f} GFLOP at batch {b}" for b in batches) + ")", ""]
        head = "| variant | " + " | ".join(f"b{b} ms | b{b} vs torch | b{b} vs ORT" for b in batches)
        head += f" | b{batches[-1]} GFLOP/s (% peak) | load s | load MiB | ready MiB | file MiB | fidelity |"
        lines += [head, "|" + " --- |" * (head.count("|") - 1)]
        for variant, r in model["variants"].items():
            cells = [LABELS.get(variant, variant)]
            for b in batches:
                row = r["batches"][b]
                ms = f"{1000 * row['median_s']:.1f}"
                if row.get("cold_median_s"):
                    ms += f" ({1000 * row['cold_median_s']:.0f})"
                cells += [ms, *(f"{row[k]:.2f}" if row.get(k) is not None else "-"  # (a variant not run: -)
                                for k in ("vs_torch", "vs_ort_fp32"))]
            last = r["batches"][batches[-1]]
            cells += [f"{last['gflops']:.0f} ({100 * last['gflops'] / peak['peak_gflops']:.0f}%)",
                      f"{r['load_s']:.1f}", mib(r["load_peak"]), mib(r.get("ready_peak")), mib(r.get("file_bytes")),
                      _fid(model["fidelity"].get(variant), variant)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    sc = data.get("scaling")
    if sc:
        lines += [f"## Scaling ({sc['preset']}): kzoo XLA and TFLite int8", "",
                  "| seq | batch | tokens | XLA ms | XLA µs/token | XLA GFLOP/s | TFLite int8 ms | int8 µs/token "
                  "| int8 GOP/s | runs |", "|" + " --- |" * 10]
        by = {(r["variant"], r["seq"], r["batch"]): r for r in sc["rows"]}
        for seq, batch in sorted({(r["seq"], r["batch"]) for r in sc["rows"]}):
            x, q = by[("kzoo-xla", seq, batch)], by[("tflite-int8", seq, batch)]
            lines.append(f"| {seq} | {batch} | {seq * batch} | {1000 * x['median_s']:.1f} | {x['us_per_token']:.0f} | "
                         f"{x['gflops']:.0f} | {1000 * q['median_s']:.1f} | {q['us_per_token']:.0f} | "
                         f"{q['gflops']:.0f} | {x['runs']} |")
        lines.append("")

    conv = data.get("conversion")
    if conv:
        c, ld = conv["convert"], conv["load"]
        lines += [f"## Conversion ({conv['preset']}, {c['parameters'] / 1e6:.0f} M parameters, "
                  f"{conv['checkpoint_bytes'] / 2**30:.2f} GiB {c['format']} checkpoint)", "",
                  "| step | seconds | peak above baseline | ratio |", "| --- | --- | --- | --- |",
                  f"| kzoo convert | {c['seconds']:.1f} | {c['peak'] / 2**30:.2f} GiB | "
                  f"{c['peak_over_checkpoint']:.2f}x checkpoint |",
                  f"| kzoo.load (converted dir) | {ld['seconds']:.1f} | {ld['peak'] / 2**30:.2f} GiB | "
                  f"{ld['peak_over_weights']:.2f}x fp32 weights |", ""]

    if data.get("targets"):
        lines += ["## Targets", "", "| target | measured | bound | met | detail |", "| --- | --- | --- | --- | --- |"]
        for t in data["targets"]:
            lines.append(f"| {t['target']} | {t['measured']:.3f} | {t['bound']} | {'met' if t['met'] else '**missed**'} "
                         f"| {t['detail']} |")
        lines.append("")
    waited = data["settings"].get("waited_s")
    lines.append(f"Command: `{data['settings']['command']}` ({data['seconds'] / 60:.1f} min"
                 + (f", after waiting {waited / 60:.0f} min for a quiet machine" if waited else "") + ").")
    return "\n".join(lines) + "\n"


SHORT = {"albert-base-v2": "albert-base-v2", "xlm-roberta-base": "xlm-roberta-base", "xlm-mlm-enfr-1024": "xlm-mlm-enfr-1024"}
README_START, README_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def summary(data, results="benchmarks/results"):
    """The README's Benchmarks section body: one table over the models, targets, the plot."""
    m, s, peak = data["machine"], data["settings"], data["matmul_peak"]
    models = data["models"]
    lines = [
        f"`bash scripts/bench.sh` (or `.venv/bin/python benchmarks/run.py`; `--quick` for albert-base-v2 "
        f"only) on {m['cpu']}, {s['threads']} threads, {data['started']}: full-size backbones, random weights, "
        f"sequence {s['seq']}, median of {s['runs']} interleaved runs. Milliseconds at batch "
        + " / ".join(models[next(iter(models))]["batches"])
        + ", and (in brackets) the ratio to ONNX Runtime fp32 at the largest batch. Matmul peak "
        f"(2048³ fp32, TensorFlow): {peak['peak_gflops']:.0f} GFLOP/s. Full tables (memory, sizes, fidelity, "
        f"scaling, conversion): [{results}/latest.md]({results}/latest.md), notes: "
        "[benchmarks/NOTES.md](benchmarks/NOTES.md).",
        "",
        "| variant | " + " | ".join(SHORT.get(p, p) for p in models) + " |",
        "| --- |" + " --- |" * len(models),
    ]
    variants = list(next(iter(models.values()))["variants"])
    for v in variants:
        cells = [LABELS.get(v, v)]
        for model in models.values():
            r = model["variants"].get(v)
            if r is None:
                cells.append("-")
                continue
            b = model["batches"]
            cells.append(" / ".join(f"{1000 * r['batches'][x]['median_s']:.0f}" for x in b)
                         + f" ({r['batches'][b[-1]]['vs_ort_fp32']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    if data.get("targets"):
        lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
        for t in data["targets"]:
            lines.append(f"| {t['target']} | {t['measured']:.3f} ({t['bound']}) | {'met' if t['met'] else '**missed**'} |")
    lines += ["", f"![benchmarks]({results}/latest.png)"]
    return "\n".join(lines)


def update_readme(data, readme):
    """Replaces the text between the README's benchmark markers (nothing else)."""
    readme = Path(readme)
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme}: no {README_START} ... {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{summary(data)}\n{README_END}{tail}")


def plot(data, file):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = data["models"]
    n = len(models) + (1 if data.get("scaling") else 0)
    cols = 2 if n > 2 else n
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.4 * rows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, (preset, model) in zip(axes, models.items()):
        variants = list(model["variants"])
        y = range(len(variants))
        height = 0.8 / len(model["batches"])
        for k, b in enumerate(model["batches"]):
            vals = [model["variants"][v]["batches"][b]["vs_ort_fp32"] for v in variants]
            ax.barh([i + k * height for i in y], vals, height=height, label=f"batch {b}")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_yticks([i + height * (len(model["batches"]) - 1) / 2 for i in y])
        ax.set_yticklabels([LABELS.get(v, v) for v in variants], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("latency / ONNX Runtime fp32 (lower is faster)")
        ax.set_title(f"{preset}, seq {data['settings']['seq']}", fontsize=10)
        ax.legend(fontsize=8)
    sc = data.get("scaling")
    if sc:
        ax = axes[n - 1]
        for variant, style in (("kzoo-xla", "-o"), ("tflite-int8", "--s")):
            for k, seq in enumerate(sorted({r["seq"] for r in sc["rows"]})):
                points = sorted((r for r in sc["rows"] if r["variant"] == variant and r["seq"] == seq),
                                key=lambda r: r["batch"])
                ax.plot([r["batch"] for r in points], [r["us_per_token"] for r in points], style, color=f"C{k}",
                        label=f"{LABELS[variant].split(' (')[0]}, seq {seq}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch")
        ax.set_ylabel("µs per token")
        ax.set_title(f"scaling: {sc['preset']}", fontsize=10)
        ax.legend(fontsize=7)
    m = data["machine"]
    fig.suptitle(f"kzoo benchmarks — {m['cpu']}, {m['threads']} threads, {data['started']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def write(data, results_dir, name="latest"):
    results_dir = Path(results_dir)
    common.write_json(results_dir / f"{name}.json", data)
    (results_dir / f"{name}.md").write_text(markdown(data))
    plot(data, results_dir / f"{name}.png")


if __name__ == "__main__":
    path = Path(sys.argv[1])
    data = json.loads(path.read_text())
    (path.with_suffix(".md")).write_text(markdown(data))
    plot(data, path.with_suffix(".png"))
