"""Tokenizers: the same 1,000 texts through each family's tokenizer, Transformers' against kzoo's Python
tokenizer, its TF graph (`tf_encode`, what a SavedModel's serve_text runs) and that graph as a .tflite (what a
`--with-tokenizer` export runs under LiteRT), side by side in one process; texts per second, the ratio to
Transformers, and how many texts get Transformers' ids.

    .venv/bin/python benchmarks/tokenization.py [--texts 1000] [--out out/bench-tokenizers]

Vocabularies trained here on the stdlib's source (no download): ALBERT (SentencePiece unigram, 30,000) and
XLM-R (SentencePiece BPE, 30,000) as scripts/main_job.py trains them, XLM (Moses + BPE with `</w>`, ~30,000
merges learned by the `tokenizers` library's BPE trainer on lowercased, accent-stripped words; it breaks
ties in hash order, so the merges differ a little run to run). Transformers'
tokenizers: ALBERT's and XLM-R's are Rust (`tokenizers`), XLM's is Python (sacremoses), as on the Hub.
Batches of 32 (the pipelines'), cut at 128 tokens, padded to the batch's longest (the graph and the .tflite:
to 128); median of 5 interleaved rounds after a warm-up. Writes benchmarks/results/tokenization.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
from pipelines import texts as sample_texts  # noqa: E402  (the pipelines benchmark's texts)

FAMILIES = ("albert", "xlm-roberta", "xlm")
VARIANTS = ("transformers", "kzoo-python", "kzoo-graph", "kzoo-tflite")
BATCH, LENGTH, ROUNDS = 32, 128, 5
# Beside the pipelines' English: punctuation, digits, accents and other scripts, which Moses and the
# normalizers have rules for.
EXTRA = ["L'été dernier, «Marie» a dit: \"c'est fini!\" — vraiment?", "Dr. Smith paid $3.50 (i.e. 3,50 €) at 7 p.m.",
         "Das Wetter in Berlin ist heute sonnig, 23°C.", "Санкт-Петербург основан в 1703 году.",
         "我们明天早上九点见面。", "Numbers like 42, 3.14159 and 1,000,000... and so on!!"]


def texts(n):
    base = sample_texts(n)
    return [t if i % 10 else f"{t} {EXTRA[i // 10 % len(EXTRA)]}" for i, t in enumerate(base)]


def prepare(out: Path):
    """Each family's Transformers tokenizer dir under `out`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import transformers
    from main_job import SENTENCEPIECE, train_sentencepiece

    files = {"albert": ("spiece.model", transformers.AlbertTokenizer),
             "xlm-roberta": ("sentencepiece.bpe.model", transformers.XLMRobertaTokenizer)}
    for family, (spm_file, cls) in files.items():
        if not (out / family / "tokenizer_config.json").exists():
            common.log(f"{family}: training a 30,000-piece SentencePiece vocabulary")
            (out / family).mkdir(parents=True, exist_ok=True)
            train_sentencepiece(out / family, spm_file, SENTENCEPIECE[family])
            cls.from_pretrained(str(out / family)).save_pretrained(str(out / family))
    if not (out / "xlm" / "tokenizer_config.json").exists():
        common.log("xlm: learning 30,000 BPE merges")
        write_xlm_bpe(out / "xlm")


def write_xlm_bpe(path: Path, vocab_size=30000):
    """vocab.json + merges.txt in XLM's layout (specials first, `</w>` ending a word), English + French."""
    import unicodedata

    from main_job import stdlib_lines
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    def plain(word):  # (XLM's lowercase_and_remove_accent)
        return "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")

    words = [" ".join(plain(w) for w in re.findall(r"\w+|[^\w\s]", line)) for line in stdlib_lines()]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.train_from_iterator(words, trainers.BpeTrainer(vocab_size=vocab_size, end_of_word_suffix="</w>",
                                                       show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    specials = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
    vocab = {t: i for i, t in enumerate(specials)}
    for token in sorted(model["vocab"], key=model["vocab"].get):
        vocab.setdefault(token, len(vocab))
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("".join(f"{a} {b} 1\n" for a, b in merges), encoding="utf-8")
    config = {"tokenizer_class": "XLMTokenizer", "do_lowercase_and_remove_accent": True,
              "lang2id": {"en": 0, "fr": 1}, "id2lang": {"0": "en", "1": "fr"}}
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def variants(family, path):
    """variant -> a function from a batch of texts to each text's ids (lists, padding dropped)."""
    import numpy as np
    import tensorflow as tf
    import transformers

    from kzoo.converters.tokenizers import from_hf_dir
    from kzoo.runtime.runners import make_interpreter

    theirs = transformers.AutoTokenizer.from_pretrained(str(path))
    ours = from_hf_dir(path, family)

    def unpadded(ids, mask):
        return [row[m.astype(bool)].tolist() for row, m in zip(np.asarray(ids), np.asarray(mask))]

    def run_transformers(batch):
        out = theirs(batch, truncation=True, max_length=LENGTH, padding=True, return_tensors="np")
        return unpadded(out["input_ids"], out["attention_mask"])

    def run_python(batch):
        out = ours(batch, truncation=True, max_length=LENGTH, padding=True)
        return unpadded(out["token_ids"], out["padding_mask"])

    encode = tf.function(lambda strings: ours.tf_encode(strings, LENGTH),
                         input_signature=[tf.TensorSpec([None], tf.string)])

    def run_graph(batch):
        out = encode(tf.constant(batch))
        return unpadded(out["token_ids"], out["padding_mask"])

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as saved:  # (as kzoo.export converts: through a SavedModel)
        holder = tf.Module()
        holder.tokenizer = ours  # (its tables)
        tf.saved_model.save(holder, saved, signatures={"serving_default": encode.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
        converter.allow_custom_ops = True
        runner = make_interpreter(model_content=converter.convert()).get_signature_runner()
    common.log(f"{family}: tokenizer .tflite converted in {time.perf_counter() - started:.0f} s")
    name = next(iter(runner.get_input_details()))

    def run_tflite(batch):
        out = runner(**{name: np.array([t.encode() for t in batch], dtype=object)})
        return unpadded(out["token_ids"], out["padding_mask"])

    return dict(zip(VARIANTS, (run_transformers, run_python, run_graph, run_tflite)))


def measure(family, path, corpus):
    runs = variants(family, path)
    batches = [corpus[i:i + BATCH] for i in range(0, len(corpus), BATCH)]
    ids, seconds = {}, {v: [] for v in runs}
    for variant, run in runs.items():  # warm-up (traces, first allocations), and the ids
        ids[variant] = [row for batch in batches for row in run(batch)]
    for _ in range(ROUNDS):
        for variant, run in runs.items():
            started = time.perf_counter()
            for batch in batches:
                run(batch)
            seconds[variant].append(time.perf_counter() - started)
    rows = []
    for variant in runs:
        s = statistics.median(seconds[variant])
        same = sum(a == b for a, b in zip(ids[variant], ids["transformers"])) / len(corpus)
        rows.append({"family": family, "variant": variant, "texts_per_second": len(corpus) / s,
                     "ratio_to_transformers": statistics.median(seconds["transformers"]) / s,
                     "ms_per_text": 1000 * s / len(corpus), "same_ids": same})
        common.log(json.dumps(rows[-1]))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--out", default="out/bench-tokenizers")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = p.parse_args()
    common.set_thread_env()
    from run import machine_info

    out = Path(args.out)
    prepare(out)
    corpus = texts(args.texts)
    rows = [row for family in args.families for row in measure(family, out / family, corpus)]
    machine = machine_info()
    report = {"machine": machine, "texts": args.texts, "batch": BATCH, "max_length": LENGTH, "rounds": ROUNDS,
              "rows": rows}
    lines = [f"# Tokenizers: {args.texts:,} texts, Transformers' and kzoo's", "",
             f"{machine.get('cpu')}, {machine.get('cores', '?')} cores, CPU flags {' '.join(machine.get('isa', []))}; "
             f"batches of {BATCH}, cut at {LENGTH} tokens; median of {ROUNDS} interleaved rounds.", "",
             "| family | variant | texts/s | ms a text | x Transformers | texts with Transformers' ids |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['family']} | {r['variant']} | {r['texts_per_second']:.0f} | {r['ms_per_text']:.3f} | "
              f"{r['ratio_to_transformers']:.2f} | {100 * r['same_ids']:.1f} % |" for r in rows]
    common.write_results("tokenization", report, lines)


if __name__ == "__main__":
    main()
