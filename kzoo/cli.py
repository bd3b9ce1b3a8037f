"""The `kzoo` command line (also `python -m kzoo`)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

from kzoo.errors import KzooError


def _print_json(obj):
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable))


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


@contextmanager
def _progress(description, enabled=True):
    """Yields a factory `(total) -> advance(n)` drawing a rich progress bar on stderr."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        def factory(total):
            task = bar.add_task(description, total=total)
            return lambda n=1: bar.advance(task, n)

        yield factory


# --- commands ---------------------------------------------------------------


def cmd_convert(args):
    from kzoo.converters.convert import convert

    with _progress("converting", enabled=not args.json) as progress:
        options = {"pretokenize_by_lang": True} if args.pretokenize_by_lang else None
        summary = convert(args.src, args.out, task=args.task, overwrite=args.overwrite, progress=progress,
                          tokenizer_options=options)
    if args.json:
        return _print_json(summary)
    preset = f" ({summary['preset']})" if summary["preset"] else ""
    print(f"{summary['out']}: {summary['architecture']} {summary['task']}{preset}, "
          f"{summary['parameters']:,} parameters from {summary['checkpoint_format']}; {summary['report']}")
    if not summary["tokenizer"]:
        print("note: the source has no tokenizer files; text commands will need them", file=sys.stderr)


def cmd_fill_mask(args):
    from kzoo.tasks import FillMask

    result = FillMask(args.model)(args.text, top_k=args.top_k, lang=args.lang)
    if args.json:
        return _print_json(result)
    groups = result if result and isinstance(result[0], list) else [result]
    for i, rows in enumerate(groups):
        if len(groups) > 1:
            print(f"mask {i + 1}:")
        for r in rows:
            print(f"  {r['score']:.4f}  {r['token_str']!r:<20} {r['sequence']}")


def cmd_embed(args):
    from kzoo.tasks import Features

    results = Features(args.model)(args.text, lang=args.lang)
    if args.json:
        return _print_json(results)
    for text, r in zip(args.text, results):
        seq = r["sequence_output"]
        line = f"{text!r}: {len(r['tokens'])} tokens, sequence_output {list(seq.shape)}"
        if "pooled_output" in r:
            p = r["pooled_output"]
            line += f", pooled_output [{p.shape[0]}] = [{', '.join(f'{v:.4f}' for v in p[:4])}, ...]"
        print(line)


def cmd_generate(args):
    from kzoo.generation import GenerationError, Generator

    causal = {"causal": True, "bidirectional": False}.get(args.attention)
    beam = args.num_beams is not None or args.length_penalty is not None
    if beam and args.sampler not in (None, "beam"):
        raise GenerationError(f"--num-beams / --length-penalty are for beam search, not --sampler {args.sampler}")
    sampler = args.sampler or ("beam" if beam else "top-p" if args.top_p is not None
                               else "top-k" if args.top_k is not None else "greedy")
    result = Generator(args.model, causal=causal)(
        args.prompt, max_new_tokens=args.max_new_tokens, lang=args.lang, sampler=sampler,
        k=args.top_k if args.top_k is not None else 5, p=args.top_p if args.top_p is not None else 0.9,
        num_beams=args.num_beams if args.num_beams is not None else 4, temperature=args.temperature,
        seed=args.seed, ignore_eos=args.ignore_eos, add_special_tokens=not args.no_special_tokens,
        length_penalty=args.length_penalty if args.length_penalty is not None else 1.0)
    if args.json:
        return _print_json(result)
    print(result["generated_text"])


def cmd_verify(args):
    from kzoo.converters.verify import verify

    try:
        import torch, transformers  # noqa: F401,E401
    except ImportError as e:
        print(f"kzoo: error: verify needs the PyTorch reference ({e}): pip install 'kzoo[reference]'",
              file=sys.stderr)
        return 2

    report = verify(args.model, args.reference)
    if args.json:
        _print_json(report)
    else:
        print(f"{report['model']} against {report['reference']} (PyTorch), bound {report['bound']:g}")
        for r in report["rows"]:
            mark = "ok  " if r["ok"] else "FAIL"
            print(f"  {mark} {r['batch']:<13} {r['output']:<16} {str(r['shape']):<16} "
                  f"max abs diff {r['max_abs_diff']:.3e}")
        print("PASS" if report["ok"] else "FAIL")
    return 0 if report["ok"] else 1


def cmd_export_savedmodel(args):
    from kzoo.export import export_savedmodel

    with _progress("exporting SavedModel", enabled=not args.json) as progress:
        report = export_savedmodel(args.model, args.out, text=False if args.ids_only else None,
                                   top_k=args.top_k, max_masks=args.max_masks, overwrite=args.overwrite,
                                   progress=progress)
    if args.json:
        _print_json(report)
        return 0 if report["ok"] else 1
    from kzoo.export import human_size

    print(f"{report['path']}: SavedModel (XLA), {human_size(report['bytes'])}")
    for name, sig in report["signatures"].items():
        print(f"  {name:<16} {', '.join(sig['inputs'])} -> {', '.join(sig['outputs'])}")
    evaluation = report["evaluation"]
    rows = {f"serving_default {k}": r for k, r in evaluation["serving_default"].items()}
    rows.update({f"serve_text {k}": r for k, r in evaluation.get("serve_text", {}).get("outputs", {}).items()})
    for name, r in rows.items():
        print(f"  against Keras fp32: {name:<28} max abs diff {r['max_abs_diff']:.2e}")
    if "serve_text" in evaluation:
        same = evaluation["serve_text"]["ids_equal_python_tokenizer"]
        print(f"  serve_text ids {'==' if same else '!='} the Python tokenizer's")
    print(f"{'PASS' if report['ok'] else 'FAIL'} (bound {evaluation['bound']:g}); report: {report['out']}.report.json")
    return 0 if report["ok"] else 1


def cmd_export_tflite(args):
    from kzoo.export import export_tflite

    with _progress(f"exporting TFLite ({args.quantize})", enabled=not args.json) as progress:
        report = export_tflite(args.model, args.out, quantize=args.quantize, calibration=args.calibration,
                               with_tokenizer=args.with_tokenizer, mask_bias=args.mask_bias, top_k=args.top_k,
                               max_masks=args.max_masks, overwrite=args.overwrite, progress=progress)
    if args.json:
        _print_json(report)
        return 0 if report["ok"] else 1
    evaluation = report["evaluation"]
    custom = f" + custom {', '.join(report['custom_ops'])}" if report["custom_ops"] else ""
    print(f"{report['out']}: {report['quantize']}, {report['size']}, {len(report['ops'])} ops, "
          f"builtin{custom}")
    for name, sig in report["signatures"].items():
        print(f"  {name:<16} {', '.join(sig['inputs'])} -> {', '.join(sig['outputs'])}")
    for name, r in evaluation["outputs"].items():
        print(f"  against Keras fp32 ({evaluation['texts']} held-out texts): {name:<12} "
              f"max abs diff {r['max_abs_diff']:.2e}  cosine {r['cosine_min']:.5f} (min)  "
              f"top-1 {100 * r['top1_agreement']:.1f}%")
    if "ids_equal_python_tokenizer" in evaluation:
        same = evaluation["ids_equal_python_tokenizer"]
        print(f"  ids in the model {'==' if same else '!='} the Python tokenizer's")
    sense = "<=" if evaluation["metric"] == "max_abs_diff" else ">="
    print(f"{'PASS' if report['ok'] else 'FAIL'} ({evaluation['metric']} {sense} {evaluation['bound']:g}); "
          f"report: {report['out']}.report.json")
    return 0 if report["ok"] else 1


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kzoo", description="ALBERT, XLM-RoBERTa and XLM for TensorFlow/Keras: convert, run, verify."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, fn, help):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(fn=fn)
        return p

    p = command("convert", cmd_convert, "convert a Hugging Face PyTorch checkpoint into a kzoo model dir")
    p.add_argument("src", help="checkpoint dir (config.json + safetensors / pytorch_model.bin), or a hub id")
    p.add_argument("out", help="the kzoo model dir to write (written aside, then renamed into place)")
    p.add_argument("--task", choices=["backbone", "masked_lm", "pretraining", "classifier"],
                   help="head to build (default: the checkpoint's own class)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--pretokenize-by-lang", action="store_true",
                   help="XLM: apply the language's own Moses rules / segmenter (Transformers 5 does not)")

    p = command("fill-mask", cmd_fill_mask, "predict the masked token(s) in a text")
    p.add_argument("model", help="kzoo model dir, or its SavedModel / .tflite export")
    p.add_argument("text", help="text with the model's mask token, e.g. [MASK] for ALBERT")
    p.add_argument("--top-k", type=int, default=5, help="predictions per mask (default 5)")
    p.add_argument("--lang", help="XLM: the text's language, e.g. fr (default: none given, as Transformers)")

    p = command("embed", cmd_embed, "sequence and pooled features of texts")
    p.add_argument("model", help="kzoo model dir, or its SavedModel / .tflite export")
    p.add_argument("text", nargs="+", help="one or more texts")
    p.add_argument("--lang", help="XLM: the texts' language, e.g. fr (default: none given, as Transformers)")

    p = command("generate", cmd_generate, "continue a text with an XLM language model (greedy, sampling, beam)")
    p.add_argument("model", help="kzoo model dir (XLM with its LM head)")
    p.add_argument("prompt", help="the text to continue (encoded as <s> text </s>, as Transformers does)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="at most this many new tokens (default 20)")
    p.add_argument("--lang", help="language of the text and of the new tokens, e.g. fr (default: the "
                   "config's lang_id, as Transformers)")
    p.add_argument("--sampler", choices=["greedy", "top-k", "top-p", "beam"],
                   help="default: greedy, or what --top-k / --top-p / --num-beams / --length-penalty imply")
    p.add_argument("--top-k", type=int, help="top-k: sample among the K likeliest tokens (default 5)")
    p.add_argument("--top-p", type=float, help="top-p: sample from the likeliest tokens up to mass P (default 0.9)")
    p.add_argument("--num-beams", type=int, help="beam: beams to keep (default 4)")
    p.add_argument("--length-penalty", type=float, help="beam: ended beams score summed log-probability / "
                   "length ** L (default 1, as Transformers)")
    p.add_argument("--temperature", type=float, default=1.0, help="divides the logits first (default 1; greedy and beam search "
                   "ignore it, as Transformers does without sampling)")
    p.add_argument("--seed", type=int, help="seed for top-k / top-p draws (default: a fresh one)")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at </s>")
    p.add_argument("--no-special-tokens", action="store_true", help="encode the prompt without <s> ... </s>")
    attention = p.add_mutually_exclusive_group()
    attention.add_argument("--causal", dest="attention", action="store_const", const="causal",
                           help="attend causally whatever the config says")
    attention.add_argument("--bidirectional", dest="attention", action="store_const", const="bidirectional",
                           help="attend bidirectionally even where the model was trained causally "
                                "(Transformers' behaviour when the config says causal=false)")

    p = sub.add_parser("export", help="export a model dir as a SavedModel (XLA) or a .tflite file",
                       description="export a model dir as a SavedModel (XLA) or a .tflite file")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")

    def export_command(name, fn, help):
        q = formats.add_parser(name, help=help, description=help)
        q.add_argument("model", help="kzoo model dir")
        q.add_argument("--json", action="store_true", help="machine-readable output (the report)")
        q.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
        q.add_argument("--top-k", type=int, default=5, help="text signature, fill-mask: predictions per mask")
        q.add_argument("--max-masks", type=int, default=4, help="text signature, fill-mask: masks per text")
        q.set_defaults(fn=fn)
        return q

    q = export_command("savedmodel", cmd_export_savedmodel,
                       "SavedModel for TensorFlow Serving: OUT/1/saved_model.pb, XLA-compiled signatures")
    q.add_argument("out", help="the SavedModel base dir to write (written aside, then renamed into place)")
    q.add_argument("--ids-only", action="store_true", help="no serve_text signature (strings in)")
    q = export_command("tflite", cmd_export_tflite, "LiteRT .tflite file, builtin ops, optionally quantized")
    q.add_argument("out", help="the .tflite file to write (+ OUT.report.json and OUT.kzoo/ beside it)")
    q.add_argument("--quantize", default="none", metavar="{none,fp16,dynamic-int8,int8,int16x8}",
                   help="weights / activations precision (default none: fp32)")
    q.add_argument("--calibration", metavar="FILE",
                   help="int8 / int16x8: calibration texts, one per line (default: built-in multilingual text)")
    q.add_argument("--with-tokenizer", action="store_true",
                   help="strings in: the SentencePiece tokenizer inside the model (ALBERT, XLM-R)")
    q.add_argument("--mask-bias", type=float, metavar="B",
                   help="attention-mask bias to build with (default: -100 for int8 / int16x8, else exact)")

    p = command("verify", cmd_verify, "compare a kzoo model with its PyTorch reference (needs kzoo[reference])")
    p.add_argument("model", help="kzoo model dir")
    p.add_argument("--reference", required=True, help="the Hugging Face checkpoint it was converted from")
    return parser


def _import_tensorflow_quietly():
    """TF's C++ start-up logs (CUDA probing, oneDNN notes) go to fd 2 before any flag can
    silence them; a CLI user should see kzoo's output, not that. Python errors still show."""
    if "tensorflow" in sys.modules:
        return
    import os

    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            tensorflow.config.list_physical_devices()  # device probing logs too
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None):
    args = build_parser().parse_args(argv)
    _import_tensorflow_quietly()
    try:
        return args.fn(args) or 0
    except KzooError as e:
        print(f"kzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kzoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
