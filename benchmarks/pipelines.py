"""Task pipelines: token-classification, question-answering and sentence-embedding over the same 1,000 texts on
xlm-roberta-base-sized task models, kzoo (Keras model dir, SavedModel, TFLite fp32 and dynamic int8, ids in)
against PyTorch side by side in one run, each variant in its own process; throughput as texts per second and
the ratio to PyTorch, plus how far each variant's results are from PyTorch's.

    .venv/bin/python benchmarks/pipelines.py [--texts 1000] [--out out/bench-pipelines]

PyTorch: Transformers 5.23's token-classification pipeline; SentenceTransformer.encode; for QA (which
Transformers 5 removed) its 4.57 algorithm as tests/qa_reference.py ports it (model and tokenizer loaded
once). Batches of 32 everywhere (Transformers' and sentence-transformers' batch_size). Random weights,
a 30,000-piece SentencePiece vocabulary trained here (scripts/main_job.py). Writes
benchmarks/results/pipelines.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
ROOT = HERE.parent
TASKS = ("token-classification", "question-answering", "sentence-embedding")
VARIANTS = ("torch", "kzoo", "savedmodel", "tflite-fp32", "tflite-dynamic-int8")
NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
BATCH = 32
WORDS = ("the city of Paris lies on the Seine and Marie Curie worked there for many years with Pierre in a small "
         "laboratory near the university while Berlin Madrid Lisbon and Rome are other capitals of Europe where "
         "people speak many languages and write long texts about history science music and art").split()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def texts(n, words=(8, 40), seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))).capitalize() + "." for _ in range(n)]


def questions(n):
    return [{"question": q, "context": c} for q, c in zip(texts(n, (4, 8), seed=1), texts(n, (40, 90), seed=2))]


def prepare(out: Path):
    """Transformers checkpoints (token classifier, QA, a sentence-transformers dir) with the trained tokenizer,
    converted and exported."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import torch
    import transformers
    from main_job import SENTENCEPIECE, train_sentencepiece

    from kzoo.converters.xlm_roberta import hf_config
    from kzoo.families import PRESETS

    tok = out / "tokenizer"
    if not (tok / "tokenizer_config.json").exists():
        log("training the tokenizer")
        tok.mkdir(parents=True, exist_ok=True)
        train_sentencepiece(tok, "sentencepiece.bpe.model", SENTENCEPIECE["xlm-roberta"])
        transformers.XLMRobertaTokenizer.from_pretrained(str(tok)).save_pretrained(str(tok))
    hf = hf_config(PRESETS["xlm-roberta-base"]["backbone"])
    builds = {"token-classification": ("XLMRobertaForTokenClassification",
                                       {"id2label": dict(enumerate(NER)), "label2id": {n: i for i, n in enumerate(NER)}}),
              "question-answering": ("XLMRobertaForQuestionAnswering", {}),
              "sentence-embedding": ("XLMRobertaModel", {})}
    for task, (cls, extra) in builds.items():
        src = out / task / "hf"
        if not (src / "config.json").exists():
            log(f"{task}: {cls}, random weights")
            torch.manual_seed(0)
            model = getattr(transformers, cls)(transformers.XLMRobertaConfig(**hf, **extra)).eval()
            model.save_pretrained(src)
            transformers.AutoTokenizer.from_pretrained(str(tok)).save_pretrained(str(src))
            if task == "sentence-embedding":  # mean pooling + Normalize, as paraphrase-multilingual / e5
                from sentence_transformers import SentenceTransformer
                from sentence_transformers.sentence_transformer import modules as M

                st = SentenceTransformer(modules=[M.Transformer(str(src), max_seq_length=128),
                                                  M.Pooling(768, "mean"), M.Normalize()], device="cpu")
                shutil_rmtree(src)
                st.save(str(src))
        kz = out / task / "kzoo"
        if not (kz / "config.json").exists():
            log(f"{task}: kzoo convert")
            subprocess.run([sys.executable, "-m", "kzoo", "convert", str(src), str(kz)], check=True)
        exports = {"savedmodel": ["savedmodel", str(kz), str(out / task / "sm")],
                   "tflite-fp32": ["tflite", str(kz), str(out / task / "fp32.tflite")],
                   "tflite-dynamic-int8": ["tflite", str(kz), str(out / task / "int8.tflite"), "--quantize",
                                           "dynamic-int8"]}
        for name, argv in exports.items():
            if not Path(argv[2]).exists():
                log(f"{task}: kzoo export {name}")
                subprocess.run([sys.executable, "-m", "kzoo", "export", *argv], check=True,
                               stdout=subprocess.DEVNULL)


def shutil_rmtree(path):
    import shutil

    shutil.rmtree(path)


def run_torch(task, src):
    """A function running the PyTorch side on the first n texts (or questions)."""
    import torch

    torch.set_num_threads(os.cpu_count())
    if task == "token-classification":
        import transformers

        pipe = transformers.pipeline("token-classification", model=str(src), device="cpu")
        return lambda n: pipe(texts(n), batch_size=BATCH)
    if task == "sentence-embedding":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(src), device="cpu")
        return lambda n: model.encode(texts(n), batch_size=BATCH)
    sys.path.insert(0, str(ROOT / "tests"))
    import qa_reference

    run = qa_reference.loaded(src)
    return lambda n: [run(x["question"], x["context"]) for x in questions(n)]


def run_kzoo(task, path, tokenizer):
    """A function running a kzoo pipeline on the first n texts (or questions), BATCH at a time."""
    import kzoo

    pipe = kzoo.pipeline(task, path, tokenizer=tokenizer)
    if task == "question-answering":
        def answer(n):
            items = questions(n)
            return [r for at in range(0, n, BATCH)
                    for r in _listed(pipe(question=[x["question"] for x in items[at:at + BATCH]],
                                          context=[x["context"] for x in items[at:at + BATCH]]))]
        return answer
    if task == "sentence-embedding":
        return lambda n: pipe(texts(n), batch_size=BATCH)
    return lambda n: [r for at in range(0, n, BATCH) for r in pipe(texts(n)[at:at + BATCH])]


def _listed(result):
    return result if isinstance(result, list) else [result]


def child(args):
    out = Path(args.out) / args.task
    paths = {"torch": out / "hf", "kzoo": out / "kzoo", "savedmodel": out / "sm", "tflite-fp32": out / "fp32.tflite",
             "tflite-dynamic-int8": out / "int8.tflite"}
    if args.variant == "torch":
        run = run_torch(args.task, paths["torch"])
    else:
        run = run_kzoo(args.task, paths[args.variant], out / "kzoo")
    run_first = time.perf_counter()
    run(min(args.texts, 4 * BATCH))  # (warm-up, four batches: traces, XLA programs of the common lengths)
    first = time.perf_counter() - run_first
    started = time.perf_counter()
    result = run(args.texts)
    seconds = time.perf_counter() - started
    peak = common.hwm()
    print(json.dumps({"seconds": seconds, "first_seconds": first, "peak_rss": peak,
                      "result": json.loads(json.dumps(result, default=lambda x: x.tolist()
                                                      if hasattr(x, "tolist") else float(x)))}))


def agreement(task, ours, theirs):
    """How far a variant's results are from PyTorch's: label / answer agreement, or the largest vector difference."""
    import numpy as np

    if task == "sentence-embedding":
        a, b = np.asarray(ours), np.asarray(theirs)
        return {"max_abs_diff": float(np.max(np.abs(a - b))),
                "cosine_min": float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))}
    if task == "question-answering":
        same = [(x["answer"], x["start"]) == (y["answer"], y["start"]) for x, y in zip(ours, theirs)]
        return {"same_answer": sum(same) / len(same),
                "max_score_diff": max(abs(x["score"] - y["score"]) for x, y in zip(ours, theirs))}
    pairs = [(x, y) for a, b in zip(ours, theirs) for x, y in zip(a, b)]
    same = [(x["entity"], x["start"], x["end"]) == (y["entity"], y["start"], y["end"]) for x, y in pairs]
    counts = sum(len(a) == len(b) for a, b in zip(ours, theirs)) / len(ours)
    return {"same_entities": sum(same) / max(len(same), 1), "same_entity_count": counts}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--out", default="out/bench-pipelines")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        return child(args)
    from run import machine_info

    out = Path(args.out)
    prepare(out)
    rows = []
    for task in args.tasks:
        results = {}
        for variant in VARIANTS:
            log(f"{task}: {variant}")
            results[variant] = common.run_child(__file__, ["--task", task, "--variant", variant, "--texts",
                                                           args.texts, "--out", out], f"{task} {variant}")
        for variant, r in results.items():
            rows.append({"task": task, "variant": variant, "texts_per_second": args.texts / r["seconds"],
                         "ratio_to_torch": results["torch"]["seconds"] / r["seconds"],
                         "peak_gib": r["peak_rss"] / 2**30,
                         **({} if variant == "torch" else agreement(task, r["result"], results["torch"]["result"]))})
            log(json.dumps(rows[-1]))
    machine = machine_info()
    report = {"machine": machine, "texts": args.texts, "batch": BATCH, "model": "xlm-roberta-base, random weights",
              "rows": rows}
    (HERE / "results" / "pipelines.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Task pipelines: 1,000 texts through xlm-roberta-base-sized task models", "",
             f"{machine.get('cpu')}, {machine.get('cores', '?')} cores, CPU flags {' '.join(machine.get('isa', []))}; "
             f"{args.texts} texts, batches of {BATCH}; warm runs.", "",
             "| task | variant | texts/s | x PyTorch | peak GiB | agreement with PyTorch |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        agree = ", ".join(f"{k} {v:.4g}" for k, v in r.items()
                          if k not in ("task", "variant", "texts_per_second", "ratio_to_torch", "peak_gib"))
        lines.append(f"| {r['task']} | {r['variant']} | {r['texts_per_second']:.1f} | {r['ratio_to_torch']:.2f} | "
                     f"{r['peak_gib']:.2f} | {agree or '(reference)'} |")
    (HERE / "results" / "pipelines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
