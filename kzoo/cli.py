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
        summary = convert(args.src, args.out, task=args.task, overwrite=args.overwrite, progress=progress)
    if args.json:
        return _print_json(summary)
    preset = f" ({summary['preset']})" if summary["preset"] else ""
    print(f"{summary['out']}: {summary['architecture']} {summary['task']}{preset}, "
          f"{summary['parameters']:,} parameters from {summary['checkpoint_format']}; {summary['report']}")
    if not summary["tokenizer"]:
        print("note: the source has no tokenizer files; text commands will need them", file=sys.stderr)


def cmd_fill_mask(args):
    from kzoo.tasks import FillMask

    result = FillMask(args.model)(args.text, top_k=args.top_k)
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

    results = Features(args.model)(args.text)
    if args.json:
        return _print_json(results)
    for text, r in zip(args.text, results):
        seq = r["sequence_output"]
        line = f"{text!r}: {len(r['tokens'])} tokens, sequence_output {list(seq.shape)}"
        if "pooled_output" in r:
            p = r["pooled_output"]
            line += f", pooled_output [{p.shape[0]}] = [{', '.join(f'{v:.4f}' for v in p[:4])}, ...]"
        print(line)


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

    p = command("fill-mask", cmd_fill_mask, "predict the masked token(s) in a text")
    p.add_argument("model", help="kzoo model dir")
    p.add_argument("text", help="text with the model's mask token, e.g. [MASK] for ALBERT")
    p.add_argument("--top-k", type=int, default=5, help="predictions per mask (default 5)")

    p = command("embed", cmd_embed, "sequence and pooled features of texts")
    p.add_argument("model", help="kzoo model dir")
    p.add_argument("text", nargs="+", help="one or more texts")

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
