"""The `kzoo` command line (also `python -m kzoo`): the composition root, the one part of kzoo that
imports every other (the converters, the exports, the core). Choices come from the declarations
(kzoo.families, kzoo.tasks); each command is a function in kzoo.cli.commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from kzoo.cli import commands
from kzoo.cli.output import import_tensorflow_quietly
from kzoo.errors import KzooError
from kzoo.tasks import TASKS

FILL_MASK = dict(TASKS["masked_lm"].text_options)
QA = dict(TASKS["question_answering"].text_options)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, as every other kzoo error (its help is a flag away:
    the command's own, also for an option the top level reports as unrecognized)."""

    command = None  # the `kzoo COMMAND [FORMAT]` of the arguments being parsed (set by main)

    def error(self, message):
        self.exit(2, f"kzoo: error: {message} (see {self.command or self.prog} --help)\n")


def build_parser():
    parser = Parser(
        prog="kzoo", description="ALBERT, XLM-RoBERTa and XLM for TensorFlow/Keras: convert, run, verify."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, fn, help):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(fn=fn)
        return p

    _convert(command)
    _pipelines(command)
    _classification(command)
    _qa(command)
    _generate(command)
    _train(command)
    _export(sub)
    p = command("verify", commands.cmd_verify, "compare a kzoo model with its PyTorch reference (needs kzoo[reference])")
    p.add_argument("model", help="kzoo model dir")
    p.add_argument("--reference", required=True, help="the Hugging Face checkpoint it was converted from")
    parser.commands = {name for name in sub.choices} | {f"export {name}" for name in sub.choices["export"].formats}
    return parser


def _convert(command):
    p = command("convert", commands.cmd_convert, "convert a Hugging Face PyTorch checkpoint into a kzoo model dir")
    p.add_argument("src", help="checkpoint dir (config.json + safetensors / pytorch_model.bin), or a hub id")
    p.add_argument("out", help="the kzoo model dir to write (written aside, then renamed into place)")
    p.add_argument("--task", choices=list(TASKS), metavar="TASK",
                   help="head to build (default: the checkpoint's own class): "
                        + "; ".join(f"{t.name}: {t.summary}" for t in TASKS.values()))
    p.add_argument("--labels", type=_label_list, metavar="A,B,...",
                   help="a classifier's or token classifier's class names, comma-separated (e.g. O,B-PER,I-PER): "
                        "a new head on a pretrained checkpoint, initialised as Transformers does")
    p.add_argument("--num-labels", type=int, metavar="N", help="as --labels, with names LABEL_0..LABEL_N-1")
    p.add_argument("--problem-type", choices=["single_label_classification", "multi_label_classification",
                                              "regression"],
                   help="a classifier's problem (default: the checkpoint's): what the scores and the loss are")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--pretokenize-by-lang", action="store_true",
                   help="XLM: apply the language's own Moses rules / segmenter (Transformers 5 does not)")


def _label_list(text):
    names = [name.strip() for name in text.split(",")] if text else []
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: an empty label name")
    return names


def _pipelines(command):
    p = command("fill-mask", commands.cmd_fill_mask, "predict the masked token(s) in a text")
    p.add_argument("model", help="kzoo model dir, or its SavedModel / .tflite export")
    p.add_argument("text", help="text with the model's mask token, e.g. [MASK] for ALBERT")
    p.add_argument("--top-k", type=int, help="predictions per mask (default 5, or what a text-in .tflite gives)")
    p.add_argument("--lang", help="XLM: the text's language, e.g. fr (default: none given, as Transformers)")
    p.add_argument("--truncation", action="store_true", help="cut a text longer than the model takes (default: "
                   "such a text is an error, as in Transformers' pipeline)")

    p = command("embed", commands.cmd_embed, "sentence vectors of texts (a sentence-transformers model: its "
                "encode()), or the sequence and pooled features of any other model")
    p.add_argument("model", help="kzoo model dir, or its SavedModel / .tflite export")
    p.add_argument("text", nargs="+", help="one or more texts")
    p.add_argument("--normalize", action="store_true", help="sentence vectors: L2-normalise them "
                   "(normalize_embeddings; a model with a Normalize module does already)")
    p.add_argument("--prompt", help="sentence vectors: a string put before every text, e.g. 'query: '")
    p.add_argument("--prompt-name", help="sentence vectors: one of the model's prompts, e.g. query (default: its "
                   "default_prompt_name's, if it has one)")
    p.add_argument("--truncate-dim", type=int, metavar="N", help="sentence vectors: keep the first N dimensions "
                   "(Matryoshka models)")
    p.add_argument("--lang", help="XLM: the texts' language, e.g. fr (default: none given, as Transformers)")
    p.add_argument("--truncation", action="store_true", help="cut texts longer than the model takes (default: "
                   "such a text is an error, as in Transformers' pipeline)")


def _classification(command):
    p = command("classify", commands.cmd_classify, "classify texts (or text pairs) with a sequence classifier: "
                "Transformers' text-classification pipeline")
    p.add_argument("model", help="kzoo model dir (a classifier), or its SavedModel / .tflite export")
    p.add_argument("text", nargs="+", help="one or more texts")
    p.add_argument("--text-pair", nargs="+", metavar="PAIR", help="a second text for each text (NLI, paraphrase)")
    p.add_argument("--top-k", type=_top_k, default=argparse.SUPPRESS, metavar="K",
                   help="labels per text, best first (default: the best one; 'all' for every label)")
    p.add_argument("--function-to-apply", choices=["softmax", "sigmoid", "none"],
                   help="scores from the logits (default: the model's problem_type, as Transformers)")
    _text_options(p)

    p = command("token-classify", commands.cmd_token_classify, "label the words of texts (NER) with a token "
                "classifier: Transformers' token-classification pipeline")
    p.add_argument("model", help="kzoo model dir (a token classifier), or its SavedModel / ids-in .tflite export")
    p.add_argument("text", nargs="+", help="one or more texts")
    p.add_argument("--aggregation-strategy", choices=["none", "simple", "first", "average", "max"], default="none",
                   help="per token (none, the default), or grouped into entities (see Transformers' pipeline)")
    p.add_argument("--ignore-labels", type=_label_list, default=None, metavar="A,B",
                   help="labels to leave out (default: O); '' keeps every label")
    p.add_argument("--lang", help="XLM: the texts' language, e.g. fr (default: none given, as Transformers)")


def _qa(command):
    p = command("qa", commands.cmd_qa, "answer a question from a context (extractive QA): Transformers' "
                "question-answering pipeline")
    p.add_argument("model", help="kzoo model dir (a question_answering model), or its SavedModel / ids-in .tflite")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--context", required=True, help="the text holding the answer")
    p.add_argument("--top-k", type=int, help="answers, best first (default 1)")
    p.add_argument("--doc-stride", type=int, help="overlap of a long context's windows, in tokens; XLM: tokens from "
                   "one window's start to the next (default: min(max-seq-len / 2, 128))")
    p.add_argument("--max-answer-len", type=int, help="longest answer in tokens (default 15)")
    p.add_argument("--max-seq-len", type=int, help="tokens per window, question included (default: min(the "
                   "model's longest input, 384))")
    p.add_argument("--max-question-len", type=int, help="XLM: the question's tokens kept (default 64)")
    p.add_argument("--lang", help="XLM: the question's and context's language, e.g. fr (default: none given, as "
                   "Transformers)")
    p.add_argument("--handle-impossible-answer", action="store_true", help="allow the empty answer")
    p.add_argument("--no-align-to-words", action="store_true", help="answers from token offsets, not whole words")

    p = command("zero-shot", commands.cmd_zero_shot, "classify texts into labels named on the command line, with "
                "an NLI classifier: Transformers' zero-shot-classification pipeline")
    p.add_argument("model", help="kzoo model dir (an NLI classifier: a label starting with 'entail')")
    p.add_argument("text", nargs="+", help="one or more texts")
    p.add_argument("--candidate-labels", required=True, type=_label_list, metavar="A,B,...",
                   help="the labels to choose from, comma-separated")
    p.add_argument("--hypothesis-template", default="This example is {}.",
                   help="the hypothesis each label is put in (default: 'This example is {}.')")
    p.add_argument("--multi-label", action="store_true", help="labels scored independently")
    p.add_argument("--lang", help="XLM: the texts' language, e.g. fr (default: none given, as Transformers)")


def _top_k(text):
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1, or 'all'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1, or 'all'")
    return value


def _text_options(p):
    p.add_argument("--lang", help="XLM: the texts' language, e.g. fr (default: none given, as Transformers)")
    p.add_argument("--truncation", action="store_true", help="cut texts longer than the model takes (default: "
                   "such a text is an error, as in Transformers' pipeline)")


def _generate(command):
    p = command("generate", commands.cmd_generate, "continue a text with an XLM language model (greedy, sampling, beam)")
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


def _train(command):
    from kzoo.training import PRECISIONS, SCHEDULERS, STRATEGIES, TrainOptions

    d = TrainOptions()
    p = command("train", commands.cmd_train, "fine-tune a classifier, token-classifier or question-answering model "
                "dir on a file (Transformers' Trainer's defaults, XLA)")
    p.add_argument("model", help="kzoo model dir with a task head (kzoo convert SRC DIR --task classifier --labels A,B)")
    p.add_argument("out", help="the trained model dir to write")
    p.add_argument("--train", required=True, metavar="FILE",
                   help='JSONL {"text", "text_pair"?, "label"} (classifier); JSONL {"tokens", "tags"} or CoNLL '
                   "columns (token classifier); SQuAD v1.1 / v2.0 JSON (question answering)")
    p.add_argument("--eval", metavar="FILE", help="a file of the same kind to report the task's metrics on")
    p.add_argument("--epochs", type=float, default=d.epochs, help=f"passes over the data (default {d.epochs:g})")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="optimizer steps, overriding --epochs")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"examples per batch (default {d.batch_size})")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help=f"default {d.learning_rate:g}")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="AdamW's, not on biases and LayerNorm weights (default 0)")
    warmup = p.add_mutually_exclusive_group()
    warmup.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear warmup steps (default 0)")
    warmup.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio, help="warmup as a share of all steps")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=d.scheduler, help="after warmup (default linear to 0)")
    p.add_argument("--gradient-accumulation", type=int, default=d.gradient_accumulation,
                   help="batches per optimizer step (default 1)")
    p.add_argument("--max-length", type=int, help="tokens per example (default: the model's longest input; "
                   "question answering: 384 at most)")
    p.add_argument("--doc-stride", type=int, default=d.doc_stride,
                   help=f"question answering: tokens a long context's windows overlap (XLM: tokens from one window's "
                        f"start to the next) (default {d.doc_stride})")
    p.add_argument("--mixed-precision", choices=PRECISIONS, default=d.mixed_precision,
                   help="bf16 (CPU, TPU) or fp16 with loss scaling (GPU); variables, softmax, LayerNorm and the loss "
                   "stay float32 (default none)")
    p.add_argument("--lora-rank", type=int, default=d.lora_rank, help="LoRA of that rank on the attention query and "
                   "value projections: only it and the head train; OUT holds the merged weights (default 0: off)")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy,
                   help="tf.distribute: mirrored = every visible GPU (else every logical CPU device) of this "
                   "machine; multi-worker = the cluster in TF_CONFIG, run on every worker, the chief writes OUT; "
                   "tpu = TPUStrategy on TPU_NAME's TPU (not tested here) (default: one device)")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="save the run's state there every --save-steps steps; "
                   "the same command run again resumes from the last one")
    p.add_argument("--save-steps", type=int, default=d.save_steps, help=f"default {d.save_steps}")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--no-shuffle", action="store_true", help="keep the file's order")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def _export(sub):
    from kzoo.export.tflite import QUANTIZE

    p = sub.add_parser("export", help="export a model dir as a SavedModel (XLA) or a .tflite file",
                       description="export a model dir as a SavedModel (XLA) or a .tflite file")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p.formats = formats.choices  # (for usage errors' help hint)

    def export_command(name, fn, help):
        q = formats.add_parser(name, help=help, description=help)
        q.add_argument("model", help="kzoo model dir")
        q.add_argument("--json", action="store_true", help="machine-readable output (the report)")
        q.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
        q.add_argument("--top-k", type=int, help=f"text signature, fill-mask: predictions per mask "
                       f"(default {FILL_MASK['top_k']})")
        q.add_argument("--max-masks", type=int, help=f"text signature, fill-mask: masks per text "
                       f"(default {FILL_MASK['max_masks']})")
        q.add_argument("--max-answer-len", type=int, help="text signature, question answering: the longest answer "
                       f"in tokens (default {QA['max_answer_len']})")
        q.add_argument("--max-length", type=int, help="text signature: its longest input in tokens (default: the "
                       "model's); longer texts are cut, and its `truncated` output says which")
        q.set_defaults(fn=fn)
        return q

    q = export_command("savedmodel", commands.cmd_export_savedmodel,
                       "SavedModel for TensorFlow Serving: OUT/1/saved_model.pb, XLA-compiled signatures")
    q.add_argument("out", help="the SavedModel base dir to write (written aside, then renamed into place)")
    q.add_argument("--ids-only", action="store_true", help="no serve_text signature (strings in)")
    q = export_command("tflite", commands.cmd_export_tflite, "LiteRT .tflite file, builtin ops, optionally quantized")
    q.add_argument("out", help="the .tflite file to write (+ OUT.report.json and OUT.kzoo/ beside it)")
    q.add_argument("--quantize", default="none", metavar="{" + ",".join(QUANTIZE) + "}",
                   help="weights / activations precision (default none: fp32)")
    q.add_argument("--calibration", metavar="FILE",
                   help="int8 / int16x8: calibration texts, one per line (default: built-in multilingual text)")
    q.add_argument("--with-tokenizer", action="store_true",
                   help="strings in: the tokenizer inside the model (SentencePiece as tf-text ops, XLM's Moses "
                        "+ BPE as builtin ops)")
    q.add_argument("--mask-bias", type=float, metavar="B",
                   help="attention-mask bias to build with, a negative number (default: -100 for int8 / int16x8, "
                        "else exact; write --mask-bias=-1e3 for an exponent)")


_PYTHON_SHOW_WARNING = warnings.showwarning


_OWN = Path(__file__).resolve().parents[1]  # (kzoo's package; its converters and exports may lie beside it)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """kzoo's own warnings in the CLI's words; others (TensorFlow's, Transformers') as Python shows them."""
    path = Path(filename).resolve()
    if path.is_relative_to(_OWN) or path.is_relative_to(_OWN.parent) and "site-packages" not in path.parts:
        print(f"kzoo: warning: {message}", file=sys.stderr)
    else:
        _PYTHON_SHOW_WARNING(message, category, filename, lineno, file, line)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    for position, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
            shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            print(f"kzoo: error: argument {position} is not UTF-8 text: {shown}", file=sys.stderr)
            return 2
    parser = build_parser()
    words = [a for a in argv if not a.startswith("-")]
    Parser.command = next((f"kzoo {c}" for c in (" ".join(words[:2]), " ".join(words[:1])) if c in parser.commands),
                          None)
    try:
        args = parser.parse_args(argv)
    finally:
        Parser.command = None
    import_tensorflow_quietly()
    try:
        with warnings.catch_warnings(), _terminable():  # kzoo's own warnings, in the CLI's words
            warnings.showwarning = _show_warning
            return args.fn(args) or 0
    except KzooError as e:
        print(f"kzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kzoo: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("kzoo: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:  # the reader left (`kzoo ... | head`): stop quietly, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python's exit flush would fail)
        return 1


class Terminated(BaseException):
    """SIGTERM, raised as an exception so that what is being written is removed on the way out (as Ctrl-C)."""


@contextlib.contextmanager
def _terminable():
    """SIGTERM raises Terminated during the block (the main thread's; a process ignoring it keeps doing so)."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
