"""What every pipeline shares: a runner (kzoo.runtime) for whatever it was given, the tokenizer, and
a check that the model's task is one the pipeline runs (kzoo.tasks)."""

from __future__ import annotations

import collections.abc
import functools
import itertools
import os
import re

import numpy as np

from kzoo.errors import KzooError
from kzoo.families import FAMILIES
from kzoo.tasks import TASKS


class PipelineError(KzooError, ValueError):
    """A one-line, user-facing problem with a pipeline's input."""


BATCH_SIZE = 32  # texts (or rows) per model call, unless `batch_size` says otherwise


def batch_size_of(options) -> int:
    """The `batch_size` option (Transformers' pipelines' name), checked: model calls take that many rows."""
    value = options.get("batch_size", BATCH_SIZE)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PipelineError(f"batch_size must be a whole number >= 1, got {value!r}")
    return int(value)


TOKENIZER_KWARGS = ("max_length", "truncation", "padding")


PADDING = (True, False, "longest", "max_length", "do_not_pad")  # (Transformers' values)


def tokenizer_kwargs_of(kwargs, where="tokenizer_kwargs"):
    """Transformers' tokenizer arguments a pipeline passes on, checked: anything else is a one-line error.
    padding changes no result (rows are masked): it stays only as a flag, whether it was asked for, which
    decides as in Transformers whether a max_length without truncation cuts (it does without padding)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise PipelineError(f"{where} must be a dict, got {type(kwargs).__name__}")
    unknown = sorted(set(kwargs) - set(TOKENIZER_KWARGS))
    if unknown:
        raise PipelineError(f"{where}: kzoo's tokenizers take {', '.join(TOKENIZER_KWARGS)}, not {', '.join(unknown)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "padding" in kwargs:
        if not any(kwargs["padding"] is p or isinstance(p, str) and kwargs["padding"] == p for p in PADDING):
            raise PipelineError(f"{where}: padding must be one of {', '.join(map(repr, PADDING))}, "
                                f"not {kwargs['padding']!r}")
        kwargs["padding"] = kwargs["padding"] not in (False, "do_not_pad")
    return kwargs


def chunks(items, size):
    return [items[at:at + size] for at in range(0, len(items), size)]


def as_runner(model):
    """A kzoo.runtime Runner for a path (model dir, SavedModel, .tflite), a Keras model or a Runner."""
    from kzoo import runtime

    if isinstance(model, runtime.Runner):
        return model
    if isinstance(model, (str, bytes, os.PathLike)):
        return runtime.load(os.fsdecode(model))
    if not any(cls.__module__.startswith("keras.") for cls in type(model).__mro__):
        raise PipelineError(f"model: expected a model dir, SavedModel or .tflite path, a Keras model or a "
                            f"kzoo.runtime Runner, got {type(model).__name__}")
    return runtime.from_keras(model, getattr(model, "kzoo_config", None))


def as_tokenizer(tokenizer, runner):
    """A tokenizer for a path (model dir or export sidecar) or a tokenizer; None: the model's own."""
    from kzoo.tokenizers import load_tokenizer

    if tokenizer is None:
        if not runner.has_tokenizer():
            raise PipelineError(_no_tokenizer(runner))
        return runner.tokenizer()
    if isinstance(tokenizer, (str, bytes, os.PathLike)):
        return load_tokenizer(os.fsdecode(tokenizer))
    return tokenizer


def _no_tokenizer(runner):
    from kzoo.io import layout

    if runner.path is None:
        return "a tokenizer is needed: pass tokenizer= (a model in memory has none stored)"
    if runner.kind == "keras":
        return (f"{runner.path}: no tokenizer: the checkpoint it was converted from had no tokenizer files "
                "(pass tokenizer=)")
    sidecar = layout.sidecar_of(runner.path)
    return (f"{runner.path}: no tokenizer beside it: {sidecar} is missing or incomplete (kzoo export writes it "
            "with the export; copy it along, or pass tokenizer=)")


def _renumbered(error, done):
    """`error` with the input it names ("input 2:", "text 2 ", "texts[1]") moved on by `done` inputs."""
    def moved(match):
        return f"{match[1]}{int(match[2]) + done}"

    message = re.sub(r"^(input |text |texts\[)(\d+)", moved, str(error), count=1)
    return error if message == str(error) else type(error)(message)


def _torch_dataset(inputs):
    """A torch Dataset (Transformers' KeyDataset over a `datasets` dataset, say) as an iterator of its items,
    else None: told by its class's bases, so that torch need not be imported."""
    if not any(c.__module__.startswith("torch.utils.data") and c.__name__ in ("Dataset", "IterableDataset")
               for c in type(inputs).__mro__):
        return None
    if hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__"):  # (map-style: indexed, as DataLoader does)
        return (inputs[i] for i in range(len(inputs)))
    return iter(inputs)


def _streamed(call):
    """`call`, which also takes an iterator (a generator, `iter(list)`) or a torch Dataset as Transformers'
    pipelines do: it then returns a generator of the results, one per input, running `batch_size` inputs per
    call as they come."""

    @functools.wraps(call)
    def run(self, *args, **options):
        items = None if not args else args[0] if isinstance(args[0], collections.abc.Iterator) else \
            _torch_dataset(args[0])
        if items is None:
            return call(self, *args, **options)
        rest = args[1:]
        size = batch_size_of({**self.defaults, **options})

        if "batch_size" not in self.OPTIONS:  # (a pipeline that runs a list in one batch: chunks of batch_size)
            options.pop("batch_size", None)

        def results():
            done = 0
            while chunk := list(itertools.islice(items, size)):
                try:
                    out = call(self, chunk, *rest, **options)
                except KzooError as e:  # its input's number counts from the stream's start, not the chunk's
                    raise _renumbered(e, done) from None
                done += len(chunk)
                # (a pipeline that answers a list of one as that one, as Transformers' question-answering)
                yield from [out] if len(chunk) == 1 and self.unwraps_one else out

        return results()

    return run


class Pipeline:
    """A pipeline on a model dir, a SavedModel, a .tflite, a Keras model or a runner; `name` is
    the pipeline's name (kzoo.pipelines.PIPELINES), which the model's task must list (kzoo.tasks)."""

    name = "?"
    OPTIONS = ()  # the keyword options of a call that takes `**options`; given at construction: defaults

    streams = True  # an iterator of inputs gives a generator of results (Transformers' pipelines)
    unwraps_one = False  # a list of one input gives that input's result, not a list of one
    labelled = False  # its results name the model's classes (the config's labels)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__ and cls.streams:
            cls.__call__ = _streamed(cls.__dict__["__call__"])

    def __init__(self, model, tokenizer=None, **defaults):
        self.defaults = self._options(defaults, {})
        self.runner = as_runner(model)
        task = self.runner.task
        if task in TASKS and self.name not in TASKS[task].pipelines:
            runs = [t.name for t in TASKS.values() if self.name in t.pipelines]
            raise PipelineError(f"{self.name} runs {', '.join(runs)} models; this one is a {task!r} model")
        if self.labelled and self.runner.path is not None and not self.runner.config:
            from kzoo.io import layout

            raise PipelineError(f"{self.runner.path}: no config beside it: {layout.sidecar_of(self.runner.path)} is "
                                "missing or incomplete, and its config.json holds the model's labels (kzoo export "
                                "writes it with the export; copy it along)")
        self.tokenizer = as_tokenizer(tokenizer, self.runner)

    def _options(self, given, defaults=None):
        """The call's options over the constructor's (Transformers' pipelines take either); an unknown
        name is a one-line error. num_workers (Transformers' DataLoader workers) is taken and changes nothing:
        kzoo batches in the calling thread."""
        if self.streams:
            given = {k: v for k, v in given.items() if k != "num_workers"}
        unknown = sorted(set(given) - set(self.OPTIONS))
        if unknown:
            takes = f"it takes {', '.join(self.OPTIONS)}" if self.OPTIONS else "it takes none at construction"
            raise PipelineError(f"{self.name}: unknown option(s) {', '.join(unknown)}; {takes}")
        return {**(self.defaults if defaults is None else defaults), **given}

    @property
    def architecture(self):
        return self.runner.config.get("architecture")

    @property
    def text_only(self):
        """The model takes text only (a `--with-tokenizer` .tflite): it tokenizes and runs in one call."""
        return self.runner.takes_text and not self.runner.input_names

    @staticmethod
    def _texts(texts):
        """(single, a list of str): a str or a non-empty list of str, else a one-line PipelineError."""
        if isinstance(texts, str):
            return True, [texts]
        if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
            got = "an empty list" if isinstance(texts, (list, tuple)) and not texts else (
                f"a {type(texts).__name__}" if not isinstance(texts, (list, tuple))
                else f"a list holding a {next(type(t).__name__ for t in texts if not isinstance(t, str))}")
            raise PipelineError(f"expected a str or a non-empty list of str, got {got}")
        return False, list(texts)

    def _run_text(self, texts, lang, truncation, needs):
        """The model's text signature on `texts` (its own tokenizer inside; a dict by input name for a
        two-input signature), with the checks _batch makes; `needs`: the output the pipeline reads (a
        PipelineError first when the signature has not it)."""
        if needs not in self.runner.text_output_names:
            raise PipelineError(f"{self.runner.path}: its text signature gives "
                                f"{', '.join(self.runner.text_output_names)}, not the {needs} {self.name} needs")
        if lang is not None:
            raise PipelineError(f"lang={lang!r}: {self.runner.path} takes text only and has no language input")
        out = self.runner(texts)
        cut = np.flatnonzero(out.get("truncated", np.zeros(len(out["token_ids"]))))
        if cut.size and not truncation:
            what = "text" if not isinstance(texts, dict) else " and ".join(texts)
            raise PipelineError(f"{what} {cut[0] + 1} is longer than the {out['token_ids'].shape[1]} tokens "
                                f"{self.runner.path} takes (its --max-length)" +
                                ("; pass truncation=True to accept it cut, on the command line --truncation"
                                 if not isinstance(texts, dict) else ""))
        return out

    def _batch(self, texts, lang=None, truncation=False, pairs=None, offsets=False, special_tokens_mask=False,
               tokenizer_kwargs=None):
        """The tokenizer's batch. lang: an XLM language code (its id at every position); None: no
        language ids, as Transformers' pipelines call XLM (they never pass `langs`). truncation: texts
        longer than the model takes are cut to its longest input (Transformers' pipelines: the
        tokenizer's truncation; a strategy name, e.g. "only_first", cuts as it says); else they are a
        one-line error naming both lengths. pairs: a text pair for each text; offsets,
        special_tokens_mask: the tokenizer's offset_mapping, special_tokens_mask too (not model inputs:
        kzoo.runtime leaves them out). tokenizer_kwargs: Transformers' max_length / truncation / padding for
        the tokenizer (`tokenizer_kwargs_of`), over `truncation`."""
        longest = self.runner.limits()[1]
        cut = {"max_length": longest, "truncation": truncation} if truncation and longest else {}
        cut.update(tokenizer_kwargs or {})
        padding = cut.pop("padding", False)
        truncation = cut.get("truncation", "max_length" in cut and not padding)  # (Transformers' default)
        if not truncation:
            cut.pop("max_length", None)
        elif "max_length" not in cut and longest:  # (Transformers: the model's max length)
            cut["max_length"] = longest
        if pairs is not None:
            cut["pairs"] = pairs
        if offsets:
            cut["return_offsets_mapping"] = True
        if special_tokens_mask:
            cut["return_special_tokens_mask"] = True
        batch = self.tokenizer(texts, **cut) if lang is None else self._with_lang(texts, lang, cut)
        lengths = batch["padding_mask"].sum(axis=1)
        if longest and not truncation and lengths.size and lengths.max() > longest:
            row = int(np.argmax(lengths))
            raise PipelineError(f"text {row + 1} is {int(lengths[row])} tokens long; the model takes at most "
                                f"{longest} (pass truncation=True to cut it; on the command line --truncation)")
        return batch

    def _with_lang(self, texts, lang, cut):
        if not getattr(self.tokenizer, "languages", None):
            family = FAMILIES.get(self.architecture)
            if family is not None and family.languages:
                raise PipelineError(f"lang={lang!r}: this {family.name.upper()} model has no languages")
            raise PipelineError(f"lang={lang!r}: {self.architecture or 'this'} models have no languages "
                                f"(lang is for {', '.join(f.name.upper() for f in FAMILIES.values() if f.languages)})")
        return self.tokenizer(texts, lang=lang, **cut)
