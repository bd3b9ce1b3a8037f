"""The one loop that applies any architecture's weight table to a Keras model.

A table is a list of `(checkpoint name pattern, Keras variable path, transform)`.
Patterns may hold `{g}`, `{i}`, `{layer}`... placeholders for integers; the same
placeholders fill the Keras path. Every shape is checked, every Keras variable must
be filled exactly once, and checkpoint tensors nobody asked for are reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kzoo.converters.tensors import CheckpointError
from kzoo.io import keras_internals
from kzoo.io.arrays import as_tensor, transpose


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)  # checkpoint names applied
    tied: list[str] = field(default_factory=list)  # tied copies present in the file, skipped
    unexpected: list[str] = field(default_factory=list)  # checkpoint names no rule wanted
    initialized: list[str] = field(default_factory=list)  # Keras variables of a new head, freshly initialised
    replaced: list[str] = field(default_factory=list)  # checkpoint tensors of a head of another size, not used

    def summary(self) -> str:
        text = f"{len(self.loaded)} tensors loaded"
        if self.tied:
            text += f", {len(self.tied)} tied copies rebuilt from the embeddings"
        if self.initialized:
            text += f", {len(self.initialized)} new weights initialised: {_short(self.initialized)}"
        if self.replaced:
            text += f" (replacing {_short(self.replaced)}, of another size)"
        if self.unexpected:
            text += f", {len(self.unexpected)} unused: {_short(self.unexpected)}"
        return text


def _short(names, n=4):
    names = sorted(names)
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _compile(pattern):
    regex = re.escape(pattern)
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", regex)
    return re.compile(regex + r"\Z")


def _target(rules, local):
    """(the Keras variable path a checkpoint name maps to, its transform); (None, None) for none."""
    for regex, dst, fn in rules:
        match = regex.match(local)
        if match:
            return dst.format(**match.groupdict()), fn
    return None, None


def _fill(variable, checkpoint, name, fn):
    """Creates (or assigns) `variable` from the checkpoint's tensor `name`, its shape checked."""
    value = checkpoint.get(name)
    if fn is not None:
        value = fn(value)
    want = tuple(variable.shape)
    if tuple(value.shape) != want:
        raise CheckpointError(
            f"{name}: shape {tuple(checkpoint.shape(name))} in the checkpoint does not fit "
            f"{variable.path} {want} (after transform: {tuple(value.shape)}); is config.json the one "
            "this checkpoint was saved with?"
        )
    keras_internals.initialize_from(variable, as_tensor(value, variable.dtype))  # (value adopted: one copy)


def _shape_after(checkpoint, name, fn):
    """The shape of a checkpoint tensor after its transform, without reading it (where the transform is
    a transpose or none; else it is read)."""
    if fn is None or fn is transpose:
        shape = tuple(checkpoint.shape(name))
        return shape[::-1] if fn is transpose else shape
    return tuple(fn(checkpoint.get(name)).shape)


def load_table(model, checkpoint, table, *, prefix="", tied=(), ignored=(), fresh=(), preloaded=(), progress=None):
    """Fills `model`'s variables from `checkpoint` following `table`. A model built under
    `keras_internals.deferred_variables()` gets each variable created from its tensor (one copy).

    prefix: stripped from checkpoint names first (e.g. "albert." for head models).
    tied: checkpoint names that duplicate another tensor (tied decoder); skipped.
    ignored: regexes for non-weight entries (buffers such as position_ids).
    progress: optional callable(advance: int) for a progress bar.
    fresh: Keras variable paths of a new head (kzoo.models.new_head_paths): where the checkpoint has
        none, or one of another shape, they keep their initializer's values (Transformers' from_pretrained
        with ignore_mismatched_sizes), listed in the report.
    preloaded: Keras variable paths the caller filled from elsewhere (a sentence-transformers Dense module).
    """
    variables = {v.path: v for v in model.weights}
    if len(variables) != len(model.weights):
        raise RuntimeError("duplicate Keras variable paths: the weight table cannot address them")
    rules = [(_compile(src), dst, fn) for src, dst, fn in table]
    ignored = [re.compile(p) for p in ignored]
    report = LoadReport()
    filled = {}

    # Largest first: the transient copies of the biggest tensor then sit beside an
    # almost empty model instead of a nearly full one.
    for name in sorted(checkpoint.names(), key=lambda n: -np.prod(checkpoint.shape(n), dtype=np.int64)):
        local = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if local in tied or name in tied:
            report.tied.append(name)
            continue
        if any(p.fullmatch(local) for p in ignored):
            continue
        path, fn = _target(rules, local)
        if path not in variables:
            report.unexpected.append(name)
            continue
        if path in fresh and _shape_after(checkpoint, name, fn) != tuple(variables[path].shape):
            report.replaced.append(name)
            continue
        _fill(variables[path], checkpoint, name, fn)
        filled[path] = name
        report.loaded.append(name)
        if progress:
            progress(1)

    report.initialized = sorted(set(fresh) - set(filled) - set(preloaded))
    keras_internals.initialize_rest(variables[path] for path in report.initialized)
    missing = sorted(set(variables) - set(filled) - set(fresh) - set(preloaded))
    if missing:
        raise CheckpointError(
            f"{len(missing)} weights missing from the checkpoint: {_short(missing)}"
            + (f"; unused checkpoint tensors: {_short(report.unexpected)}" if report.unexpected else "")
        )
    return report
