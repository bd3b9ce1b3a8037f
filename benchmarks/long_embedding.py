"""Long inputs: a bge-m3-sized sentence embedder (XLM-R large, 8,194 positions) on one text of 512, 2,048 and
8,192 tokens, kzoo against PyTorch side by side in one run: time and peak memory (each run in its own
process, so that its peak is its own), and how far kzoo's vector is from PyTorch's.

    .venv/bin/python benchmarks/long_embedding.py [--lengths 512 2048 8192] [--out out/bench-long]

Random weights (no download): Transformers' XLMRobertaModel from the bge-m3 config, saved as a
sentence-transformers dir (CLS pooling + Normalize, as bge-m3), converted by `kzoo convert` (attention in
blocks of 1,024 queries). kzoo runs the model dir's Keras model under tf.function; PyTorch runs
SentenceTransformer.encode's computation (XLMRobertaModel, sdpa attention) under no_grad. Writes
benchmarks/results/long_embedding.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
BGE_M3 = dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
              intermediate_size=4096, max_position_embeddings=8194, type_vocab_size=1, pad_token_id=1,
              bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, hidden_act="gelu")


def prepare(out: Path):
    """The sentence-transformers dir (weights, no tokenizer: ids are fed) and its kzoo conversion."""
    st, kz = out / "st", out / "kzoo"
    if not (st / "modules.json").exists():
        import torch
        import transformers

        common.log("building the bge-m3-sized checkpoint (random weights)")
        torch.manual_seed(0)
        model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**BGE_M3), add_pooling_layer=False)
        model.save_pretrained(st)
        (st / "1_Pooling").mkdir(exist_ok=True)
        (st / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 1024, "pooling_mode": "cls"}))
        (st / "2_Normalize").mkdir(exist_ok=True)
        (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192}))
        (st / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    if not (kz / "config.json").exists():
        common.log("kzoo convert")
        subprocess.run([sys.executable, "-m", "kzoo", "convert", str(st), str(kz)], check=True)
    return st, kz


def ids(length, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, 250000, size=(1, length)).astype("int32")
    tokens[0, 0], tokens[0, -1] = 0, 2  # <s> ... </s>
    return tokens


def run_torch(st, length):
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count())
    model = transformers.XLMRobertaModel.from_pretrained(st, add_pooling_layer=False).eval()
    x = torch.as_tensor(ids(length), dtype=torch.long)
    seconds = []
    with torch.no_grad():
        for _ in range(2):  # the first call, then a warm one
            started = time.perf_counter()
            hidden = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
            seconds.append(time.perf_counter() - started)
    vector = torch.nn.functional.normalize(hidden[:, 0], dim=-1)[0].numpy()
    return seconds, np.asarray(vector, np.float32)


def run_kzoo(kz, length):
    import numpy as np
    import tensorflow as tf

    import kzoo

    model = kzoo.load(kz)
    tokens = ids(length)
    batch = {"token_ids": tf.constant(tokens), "padding_mask": tf.ones_like(tokens),
             "segment_ids": tf.zeros_like(tokens)}
    embed = tf.function(lambda b: model(b, training=False)["sentence_embedding"])
    seconds = []
    for _ in range(2):  # the first call (tf.function traces it), then a warm one
        started = time.perf_counter()
        vector = embed(batch).numpy()[0]
        seconds.append(time.perf_counter() - started)
    return seconds, np.asarray(vector, np.float32)


def child(args):
    """One run in this process: prints {"seconds", "peak_rss", "vector"} as JSON."""
    st, kz = Path(args.out) / "st", Path(args.out) / "kzoo"
    seconds, vector = run_torch(st, args.length) if args.engine == "torch" else run_kzoo(kz, args.length)
    peak = common.hwm()
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "vector": vector.tolist()}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--out", default="out/bench-long")
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:
        return child(args)
    import numpy as np

    from run import machine_info

    out = Path(args.out)
    prepare(out)
    rows = []
    for length in args.lengths:
        result = {}
        for engine in ("torch", "kzoo"):
            common.log(f"{engine} at {length} tokens")
            result[engine] = common.run_child(__file__, ["--engine", engine, "--length", length, "--out", out],
                                              f"{engine} at {length}")
        diff = float(np.max(np.abs(np.asarray(result["kzoo"]["vector"]) - np.asarray(result["torch"]["vector"]))))
        rows.append({"tokens": length, "max_abs_diff": diff,
                     **{f"{e}_first_seconds": result[e]["seconds"][0] for e in result},
                     **{f"{e}_seconds": result[e]["seconds"][1] for e in result},
                     **{f"{e}_peak_gib": result[e]["peak_rss"] / 2**30 for e in result},
                     "time_ratio_kzoo_to_torch": result["kzoo"]["seconds"][1] / result["torch"]["seconds"][1]})
        common.log(json.dumps(rows[-1]))
    machine = machine_info()
    report = {"machine": machine, "model": "bge-m3-sized XLM-R large (8194 positions), CLS + Normalize",
              "attention_chunk_size": 1024, "rows": rows}
    lines = ["# Long inputs: one text through a bge-m3-sized embedder", "",
             f"{machine.get('cpu')}, {machine.get('cores', '?')} cores, CPU flags {' '.join(machine.get('isa', []))}", "",
             "Warm calls (the first call in brackets: kzoo's tf.function traces it); peak: the process's resident "
             "memory, weights included (2.1 GiB of fp32).", "",
             "| tokens | PyTorch s | kzoo s | kzoo / PyTorch | PyTorch peak GiB | kzoo peak GiB | max abs diff |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['tokens']} | {r['torch_seconds']:.1f} ({r['torch_first_seconds']:.1f}) | "
                     f"{r['kzoo_seconds']:.1f} ({r['kzoo_first_seconds']:.1f}) | "
                     f"{r['time_ratio_kzoo_to_torch']:.2f} | {r['torch_peak_gib']:.2f} | {r['kzoo_peak_gib']:.2f} | "
                     f"{r['max_abs_diff']:.1e} |")
    common.write_results("long_embedding", report, lines)


if __name__ == "__main__":
    main()
