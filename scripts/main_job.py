"""The main job: build (or take) a checkpoint, convert it, verify it, run fill-mask.

    python scripts/main_job.py                      # offline: full-size albert-base-v2, random weights
    python scripts/main_job.py --checkpoint DIR     # real weights from a local HF checkpoint dir
    python scripts/main_job.py --checkpoint albert/albert-base-v2   # or a hub id, when online

Offline there is no model hub, so the reference checkpoint is Transformers'
`AlbertForMaskedLM` with the exact albert-base-v2 config and *random* weights, and
its tokenizer is a 30,000-piece SentencePiece model trained here on the Python
standard library's source text. Predictions are therefore meaningless words; what
the job shows is that kzoo reproduces PyTorch exactly, end to end.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import kzoo  # noqa: F401  (sets the Keras backend)
from kzoo.cli.output import import_tensorflow_quietly

import_tensorflow_quietly()

TEXT = "Hello I'm a {mask} model."

# How the offline reference's tokenizer is trained, per family (an ALBERT-like unigram or a
# fairseq-like BPE SentencePiece model); everything else comes from the declarations.
SENTENCEPIECE = {
    "albert": dict(lowercase=True, spm=dict(model_type="unigram", pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
                                            user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"])),
    "xlm-roberta": dict(lowercase=False, spm=dict(model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1)),
}
PRESETS = ("albert-base-v2", "xlm-roberta-base")


def step(title):
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def done(t0):
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def stdlib_lines():
    """Lines of the stdlib's source text over 15 characters (comments unmarked): a corpus with no download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    lines = []
    for file in sorted(root.rglob("*.py")):
        if "test" in file.parts or "site-packages" in file.parts:
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        lines += [s for s in (line.strip().lstrip("#").strip() for line in text.splitlines()) if len(s) > 15]
    return lines


def train_sentencepiece(out_dir: Path, spm_file: str, ref: dict, vocab_size=30000):
    """A SentencePiece model trained on the stdlib's source text (no corpus download)."""
    import sentencepiece as spm

    lines = stdlib_lines()
    if ref["lowercase"]:  # ALBERT's tokenizer lowercases its input; so should its pieces
        lines = [s.lower() for s in lines]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as corpus:
        corpus.write("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=corpus.name, model_prefix=str(out_dir / Path(spm_file).stem), vocab_size=vocab_size,
        hard_vocab_limit=False, input_sentence_size=2_000_000, shuffle_input_sentence=True,
        minloglevel=2, **ref["spm"],
    )
    Path(corpus.name).unlink()


def build_reference(out_dir: Path, preset: str):
    """Transformers' masked-LM model with the preset's exact config and random weights."""
    import torch
    import transformers

    from kzoo.converters import spec_of
    from kzoo.families import FAMILIES, PRESETS

    family = FAMILIES[PRESETS[preset]["architecture"]]
    spec = spec_of(family)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(out_dir, spec.TOKENIZER.spm_file, SENTENCEPIECE[family.name])
    tokenizer = transformers.TOKENIZER_MAPPING[transformers.CONFIG_MAPPING[spec.MODEL_TYPE]]  # e.g. AlbertTokenizer
    tokenizer.from_pretrained(str(out_dir)).save_pretrained(str(out_dir))
    hf = transformers.CONFIG_MAPPING[spec.MODEL_TYPE](**spec.hf_config(PRESETS[preset]["backbone"]))
    masked_lm = next(cls for cls, task in spec.TASK_OF_CLASS.items() if task == "masked_lm")
    torch.manual_seed(0)
    getattr(transformers, masked_lm)(hf).eval().save_pretrained(str(out_dir))
    return out_dir


def reference_fill_mask(src, text):
    import transformers

    fill = transformers.pipeline("fill-mask", model=str(src), tokenizer=str(src), device="cpu")
    return fill(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="HF checkpoint dir or hub id (default: build --preset offline)")
    parser.add_argument("--preset", default="albert-base-v2", choices=PRESETS,
                        help="architecture of the offline reference (default: albert-base-v2)")
    parser.add_argument("--out", default="out", help="working folder (default: out/)")
    parser.add_argument("--text", help="fill-mask input (default: %r with the model's mask token)" % TEXT)
    args = parser.parse_args(argv)

    from kzoo.converters.convert import convert
    from kzoo.converters.verify import verify
    from kzoo.export import export_savedmodel, export_tflite
    from kzoo.pipelines import FillMask

    out = Path(args.out)
    src = args.checkpoint
    if src is None:
        src = out / "reference" / args.preset
        t0 = step(f"building the reference checkpoint at {src} ({args.preset} config, RANDOM weights: "
                  "no model hub offline)")
        if not (src / "config.json").exists():
            build_reference(src, args.preset)
        done(t0)

    model_dir = out / "kzoo" / Path(str(src)).name
    t0 = step(f"kzoo convert {src} {model_dir}")
    summary = convert(src, model_dir, overwrite=True)
    print(f"   {summary['architecture']} {summary['task']} ({summary['preset']}), "
          f"{summary['parameters']:,} parameters; {summary['report']}")
    done(t0)

    t0 = step(f"kzoo verify {model_dir} --reference {src}")
    report = verify(model_dir, src)
    for r in report["rows"]:
        print(f"   {'ok  ' if r['ok'] else 'FAIL'} {r['batch']:<13} {r['output']:<16} max abs diff "
              f"{r['max_abs_diff']:.2e}")
    done(t0)

    fill = FillMask(model_dir)
    text = args.text or TEXT.format(mask=fill.tokenizer.mask_token)
    t0 = step(f"kzoo fill-mask {model_dir} {text!r}")
    ours = fill(text)
    print(json.dumps(ours, indent=2, ensure_ascii=False))
    theirs = reference_fill_mask(src, text)
    same = [a["token"] for a in ours] == [b["token"] for b in theirs] and all(
        a["sequence"] == b["sequence"] and abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(ours, theirs))
    print(f"   Transformers' fill-mask pipeline on the PyTorch model gives {'the same' if same else 'DIFFERENT'} "
          "tokens, sequences and scores")
    done(t0)

    exports = []
    savedmodel = out / "export" / f"{model_dir.name}-savedmodel"
    t0 = step(f"kzoo export savedmodel {model_dir} {savedmodel}")
    saved = export_savedmodel(model_dir, savedmodel, overwrite=True)
    diffs = saved["evaluation"]["serving_default"]
    print(f"   {saved['path']}: signatures {', '.join(saved['signatures'])} (XLA); serving_default vs "
          f"Keras max abs diff {max(r['max_abs_diff'] for r in diffs.values()):.2e}")
    exports.append(saved["ok"])
    done(t0)

    tflite = out / "export" / f"{model_dir.name}-dynamic-int8.tflite"
    t0 = step(f"kzoo export tflite {model_dir} {tflite} --quantize dynamic-int8 --with-tokenizer")
    lite = export_tflite(model_dir, tflite, quantize="dynamic-int8", with_tokenizer=True, overwrite=True)
    for name, r in lite["evaluation"]["outputs"].items():
        print(f"   {lite['size']}, builtin ops + tf-text; {name} vs Keras fp32: cosine {r['cosine_min']:.4f} "
              f"(min), top-1 {100 * r['top1_agreement']:.1f}%")
    exports.append(lite["ok"])
    on_device = FillMask(tflite)(text)  # one file: string in, top-k out (tokenized inside it)
    print(f"   fill-mask on the .tflite under LiteRT, text in: tokens {[r['token'] for r in on_device]} "
          f"(Keras: {[r['token'] for r in ours]})")
    done(t0)

    ok = report["ok"] and same and all(exports)
    print(f"\n{'PASS' if ok else 'FAIL'}: kzoo matches PyTorch (bound {report['bound']:g}); exports meet their bounds")
    return 0 if ok else 1


if __name__ == "__main__":
    from kzoo.errors import KzooError

    try:
        sys.exit(main())
    except KzooError as e:  # a bad --checkpoint, a full disk...: one line, as kzoo's CLI says it
        print(f"main job: error: {e}", file=sys.stderr)
        sys.exit(2)
