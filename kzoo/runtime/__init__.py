"""One callable over every form a kzoo model takes: a model dir, a SavedModel export, a .tflite export.

    from kzoo import runtime
    run = runtime.load("out/albert.tflite")       # or "out/albert-sm" (SavedModel), or "out/albert"
    out = run(tokenizer(["Hello [MASK]."]))       # ids in: dict of int32 [B, S] -> dict of numpy
    out = run(["Hello [MASK]."])                  # text in, when the export has a text signature

Every pipeline runs on a Runner. The config and tokenizer of an export are the copies `kzoo export`
stores beside it (its sidecar, kzoo.io.layout). TFLite runs on ai-edge-litert (LiteRT) signature
runners, with tf-text's custom ops registered (a `--with-tokenizer` model needs them).
This package never imports kzoo.export: running an export needs none of the export machinery.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kzoo.errors import RunnerError
from kzoo.io import layout
from kzoo.tasks import TASKS

__all__ = ["Runner", "RunnerError", "from_keras", "load"]


def load(path, *, num_threads=None) -> "Runner":
    """A Runner for a model dir, a SavedModel dir or a .tflite file."""
    from kzoo.runtime import runners

    kind = layout.kind_of(path)
    return {"modeldir": runners.KerasRunner, "savedmodel": runners.SavedModelRunner,
            "tflite": runners.TFLiteRunner}[kind](path, num_threads=num_threads)


def from_keras(model, config=None) -> "Runner":
    """A Runner for a Keras model in memory (a kzoo model; `config`: its model-dir config)."""
    from kzoo.runtime import runners

    return runners.KerasRunner(None, model=model, config=config)


class Runner:
    """`runner(inputs)`: a dict of int32 [B, S] arrays -> the model's outputs (dict of numpy);
    `runner(texts)`: str or list of str -> the export's text signature (when it has one).

    `config` is the model dir's config (architecture, task, labels, ...), `task` its task.
    """

    kind = "?"
    input_names: list = []  # the ids signature's inputs; [] when there is none
    output_names: list = []
    takes_text = False
    text_output_names: list = []  # the text signature's outputs
    text_input_names: tuple = (layout.TEXT_INPUT,)  # and its string inputs
    _rank = None  # the ids' rank, where the model says (else the task's)

    def __init__(self, path, config=None):
        self.path = Path(str(path)) if path is not None else None  # None: a model in memory
        self.config = config if config is not None else _read_config(layout.sidecar_of(path) / "config.json")
        self._tokenizer = None
        self._lock = threading.RLock()  # for what is built on first use: a runner serves many threads

    @property
    def task(self):
        return self.config.get("task")

    @property
    def kzoo_config(self):  # the name Keras models loaded by kzoo.load carry
        return self.config

    def has_tokenizer(self) -> bool:
        """Whether a tokenizer is stored with the model (a model dir's own, an export's sidecar copy)."""
        from kzoo.tokenizers import META_FILE

        return self.path is not None and (layout.sidecar_of(self.path) / META_FILE).is_file()

    def tokenizer(self):
        """The tokenizer stored with the model (a model dir's own, an export's sidecar copy)."""
        with self._lock:
            if self._tokenizer is None:
                from kzoo.tokenizers import load_tokenizer

                if self.path is None:
                    raise RunnerError("a model in memory has no stored tokenizer: pass tokenizer=")
                self._tokenizer = load_tokenizer(layout.sidecar_of(self.path))
        return self._tokenizer

    def __call__(self, inputs, positions=None):
        """ids -> outputs; with `positions` ([B, M] int), the per-position outputs ([B, S, ...]) at
        those positions only ([B, M, ...]), per-text outputs left out. texts -> the text signature."""
        texts = self._text_inputs(inputs)
        if texts is not None:
            if not self.takes_text:
                raise RunnerError(f"{self.path}: takes ids, not text (export it with a text signature, or "
                                  "tokenize first: kzoo.load_tokenizer)")
            return self._run_text(texts)
        if isinstance(inputs, (list, tuple)) and not inputs:
            raise RunnerError("got an empty list: nothing to run (texts, or a dict of [batch, length] ids)")
        if not self.input_names:
            raise RunnerError(f"{self.path}: takes text only (exported --with-tokenizer): call it with a str "
                              f"or a list of str, not {type(inputs).__name__}")
        batch = self._ids(inputs)
        if positions is None:
            return self._run_ids(batch)
        return self._run_at(batch, np.asarray(positions, np.int32))

    def _text_inputs(self, inputs):
        """{text input name: [str]} when `inputs` is text: texts (a signature taking "text"), or a dict of
        texts by the signature's input names ({"question": [...], "context": [...]}); else None."""
        names = self.text_input_names
        if isinstance(inputs, Mapping) and self.takes_text and inputs and set(inputs) <= set(names):
            given = {name: _texts(value) for name, value in inputs.items()}
            if set(given) != set(names) or any(v is None for v in given.values()):
                raise RunnerError(f"{self.path}: its text signature takes {', '.join(names)}: a str or a list of str "
                                  "each")
            if len({len(v) for v in given.values()}) > 1:
                raise RunnerError(f"{', '.join(f'{len(v)} {k}' for k, v in given.items())}: one of each per example")
            return given
        texts = _texts(inputs)
        if texts is not None and self.takes_text and list(names) != [layout.TEXT_INPUT]:
            raise RunnerError(f"{self.path}: its text signature takes {' and '.join(names)}: call it with a dict "
                              f"{{{', '.join(repr(n) + ': [...]' for n in names)}}}")
        return None if texts is None else {layout.TEXT_INPUT: texts}

    def _ids(self, inputs):
        """The caller's dict of ids, checked (names, shapes, ranges) and completed: an optional input
        left out (kzoo.models.optional_inputs) gets its "not given" value; any other is required."""
        if not isinstance(inputs, Mapping):
            raise RunnerError(f"expected texts or a dict of int32 [batch, length] arrays ({', '.join(self.input_names)}), "
                              f"got {type(inputs).__name__}")
        batch = {}
        for name, value in inputs.items():
            try:
                batch[name] = np.asarray(value)
            except (TypeError, ValueError) as e:
                raise RunnerError(f"{name}: expected a [batch, length] array of ids ({e})") from None
        unknown = sorted(set(batch) - set(self.input_names))
        if unknown:
            renamed = [f"{name} -> {_KZOO_NAMES[name]}" for name in unknown if name in _KZOO_NAMES]
            hint = f" (kzoo's names for Transformers': {', '.join(renamed)})" if renamed else ""
            raise RunnerError(f"unknown input(s) {', '.join(unknown)}: the model takes "
                              f"{', '.join(self.input_names)}{hint}")
        optional = self.optional_inputs()
        missing = [name for name in self.input_names if name not in batch and name not in optional]
        if missing:
            raise RunnerError(f"missing input(s) {', '.join(missing)}: the model takes {', '.join(self.input_names)} "
                              f"({', '.join(f'{n}: {_WHAT[n]}' for n in missing if n in _WHAT)})")
        check_inputs(batch, *self.limits(), rank=self.input_rank)
        shape = batch["token_ids"].shape
        return {name: batch[name].astype(np.int32) if name in batch else np.full(shape, optional[name], np.int32)
                for name in self.input_names}

    @property
    def input_rank(self):
        """2 ([batch, length]), or 3 for multiple choice ([batch, choices, length])."""
        if self._rank is not None:
            return self._rank
        task = TASKS.get(self.task)
        return 3 if task is not None and task.choices else 2

    def limits(self):
        """({input: (lowest, highest + 1) or None}, longest input) the model takes (see kzoo.models)."""
        with self._lock:
            if getattr(self, "_limits", None) is None:
                from kzoo.models import input_limits

                architecture, backbone = self.config.get("architecture"), self.config.get("backbone")
                self._limits = input_limits(architecture, backbone) if architecture and backbone else ({}, None)
        return self._limits

    def optional_inputs(self):
        """{input: its "not given" value} for the inputs a caller may leave out (none, unknown family)."""
        from kzoo.families import FAMILIES
        from kzoo.models import optional_inputs

        architecture = self.config.get("architecture")
        return optional_inputs(architecture) if architecture in FAMILIES else {}

    def backbone_outputs(self, inputs):
        """The backbone's outputs (sequence_output, and pooled_output with a pooler) for ids."""
        out = self(inputs)
        if "sequence_output" not in out:
            raise RunnerError(f"{self.path}: features need the backbone's sequence_output, and this export gives "
                              f"its head's {', '.join(sorted(out))} only: run features on the model dir itself, or "
                              "export a backbone (kzoo convert CHECKPOINT OUT --task backbone)")
        return out

    def predict_on_batch(self, inputs):
        """Keras' `predict_on_batch` answer: the array for a single "logits" output, else the dict."""
        out = self(inputs)
        return out["logits"] if list(out) == ["logits"] else out

    def _run_ids(self, batch):
        raise NotImplementedError

    def _run_at(self, batch, positions):
        rows = np.arange(len(positions))[:, None]
        return {k: v[rows, positions] for k, v in self._run_ids(batch).items() if v.ndim == 3}

    def _run_text(self, texts):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.path} inputs={self.input_names} outputs={self.output_names}>"


_WHAT = {"token_ids": "the vocabulary's ids", "segment_ids": "the token types", "lang_ids": "the languages",
         "padding_mask": "1 for a token, 0 for padding"}
_KZOO_NAMES = {"input_ids": "token_ids", "attention_mask": "padding_mask", "token_type_ids": "segment_ids",
               "langs": "lang_ids"}


def _texts(inputs):
    """A list of str when `inputs` is text (a str, bytes, or a non-empty list of them), else None. A
    one-line RunnerError for text that is not Unicode (lone surrogates, bytes not UTF-8)."""
    single = isinstance(inputs, (str, bytes))
    if not single and not (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (str, bytes))):
        return None
    texts = []
    for i, text in enumerate([inputs] if single else inputs):
        try:
            texts.append(text.decode("utf-8") if isinstance(text, bytes) else text.encode("utf-8").decode("utf-8"))
        except (UnicodeError, AttributeError) as e:
            what = f"a {type(text).__name__}, not text" if not isinstance(text, (str, bytes)) else "not UTF-8 text"
            raise RunnerError(f"texts[{i}] is {what} ({type(e).__name__})") from None
    return texts


def check_inputs(batch, ranges, longest, rank=2):
    """A one-line RunnerError for inputs the model cannot take: not [batch, length] integers of one
    shape ([batch, choices, length]: rank 3, a multiple-choice model), a value outside its range
    (instead of computing on clamped garbage), or too long."""
    shape = batch["token_ids"].shape
    dims = "[batch, length]" if rank == 2 else "[batch, choices, length]"
    if len(shape) == rank and 0 in shape:  # (LiteRT cannot run it; the other runners would return nothing)
        raise RunnerError(f"token_ids has shape {list(shape)}: no rows or no tokens (a row needs at least one)")
    for name, value in batch.items():
        if value.ndim != rank:
            raise RunnerError(f"{name} has shape {list(value.shape)}: every input is one {dims} array"
                              + (" (one text: [[...]])" if rank == 2 else ""))
        if value.shape != shape:
            raise RunnerError(f"{name} has shape {list(value.shape)}, token_ids {list(shape)}: every input has "
                              f"the same {dims}")
        if value.size and value.dtype.kind not in "iu":
            raise RunnerError(f"{name}: expected integer ids, got {value.dtype}")
    for name, limits in ranges.items():
        value = batch.get(name)
        if limits is None or value is None or not value.size:
            continue
        low, high = limits
        bad = value[(value < low) | (value >= high)]
        if bad.size:
            raise RunnerError(f"{name}: {int(bad[0])} is outside {low}..{high - 1} ({_WHAT.get(name, 'its range')})")
    if longest is not None and len(shape) == rank and shape[-1] > longest:
        raise RunnerError(f"the input is {shape[-1]} tokens long; the model takes at most {longest} "
                          "(truncate it: truncation=True, or --truncation)")


def _read_config(file: Path):
    try:
        return json.loads(file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
