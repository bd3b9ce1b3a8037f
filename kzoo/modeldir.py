"""The kzoo model dir: `config.json` + `model.weights.h5` + tokenizer files.

    config.json  {"format": "kzoo", "format_version": 1, "architecture", "task",
                  "preset", "backbone": {...}, "task_config": {...}, "labels", "source"}
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from kzoo.errors import KzooError

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
FORMAT_VERSION = 1


class ModelDirError(KzooError):
    """A one-line, user-facing problem with a model dir."""


# architecture -> module with `build(task, backbone_config, **task_config)` and `TASKS`
ARCHITECTURES = {"albert": "kzoo.albert", "xlm-roberta": "kzoo.xlm_roberta", "xlm": "kzoo.xlm"}


def build_model(config):
    """A freshly initialised Keras model for a model-dir config dict."""
    arch = config.get("architecture")
    if arch not in ARCHITECTURES:
        raise ModelDirError(f"unknown architecture {arch!r}; kzoo knows {sorted(ARCHITECTURES)}")
    module = importlib.import_module(ARCHITECTURES[arch])
    task = config.get("task")
    if task != "backbone" and task not in module.TASKS:
        raise ModelDirError(f"{arch} has no task {task!r}; it has backbone, {', '.join(module.TASKS)}")
    return module.build(task, config["backbone"], **config.get("task_config", {}))


def read_config(path):
    path = Path(path)
    file = path / CONFIG
    if not path.is_dir():
        raise ModelDirError(f"{path}: not a directory (expected a kzoo model dir made by `kzoo convert`)")
    try:
        config = json.loads(file.read_text())
    except FileNotFoundError:
        raise ModelDirError(f"{path}: no {CONFIG}; is this a kzoo model dir made by `kzoo convert`?") from None
    except json.JSONDecodeError as e:
        raise ModelDirError(f"{file}: not valid JSON ({e})") from None
    if config.get("format") != "kzoo":
        raise ModelDirError(
            f"{file}: not a kzoo config (a Hugging Face checkpoint? convert it first: kzoo convert {path} OUT)"
        )
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ModelDirError(f"{file}: format_version {config['format_version']} is newer than this kzoo")
    return config


def load(path):
    """Loads a kzoo model dir as a Keras model (the task model with its head)."""
    path = Path(path)
    config = read_config(path)
    from kzoo.converters.weights import deferred_variables

    with deferred_variables():  # no random init: each variable is created from the file's tensor
        model = build_model(config)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ModelDirError(f"{path}: {WEIGHTS} is missing")
    try:
        _load_deferred(model, weights)
    except Exception as e:  # h5py / Keras errors are long; name the file and the gist
        raise ModelDirError(f"{weights}: could not load weights ({str(e).splitlines()[0]})") from None
    model.kzoo_config = config
    return model


def _load_deferred(model, file):
    """`model.load_weights(file)` for a model built with deferred variables.

    Keras assigns each stored tensor (a numpy array read from the file) to its variable; here that
    assignment creates the variable instead, from a 64-byte-aligned copy of the array handed to TF
    without a further copy (DLPack; `tf.convert_to_tensor` would hold two more copies). Loading
    then peaks at the weights plus one copy of the largest tensor: xlm-roberta-base 1.4x its fp32
    weights, 3.5x before (random init first, then assignment).
    """
    import numpy as np
    import tensorflow as tf
    from keras.src.backend.common import global_state

    def aligned_copy(value, dtype):
        raw = np.empty(value.size * np.dtype(dtype).itemsize + 64, np.uint8)
        offset = -raw.ctypes.data % 64
        out = raw[offset:offset + value.size * np.dtype(dtype).itemsize].view(dtype).reshape(value.shape)
        out[...] = value
        return out

    def create_from(variable):
        def assign(value):
            del variable.assign  # the class's own method again
            value = np.asarray(value)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{variable.path}: shape {tuple(value.shape)} in the file, "
                                 f"{tuple(variable.shape)} in the model")
            if value.size < 2**16 or variable.dtype not in ("float32", "float64", "int32", "int64"):
                tensor = tf.cast(tf.convert_to_tensor(value), variable.dtype)
            else:
                tensor = tf.experimental.dlpack.from_dlpack(aligned_copy(value, variable.dtype).__dlpack__())
            variable._initializer = lambda shape, dtype: tensor
            variable._deferred_initialize()

        return assign

    pending = [v for v in model.variables if v._value is None]
    for v in pending:
        v.assign = create_from(v)
    try:
        model.load_weights(file)
    finally:
        for v in pending:
            v.__dict__.pop("assign", None)
            if v._value is None:  # not in the file (or loading failed): its own initializer
                v._deferred_initialize()
        global_state.set_global_attribute("uninitialized_variables", [])


def save(model, config, out):
    """Writes a model dir at `out` (config + weights); tokenizer files are added by the caller."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"format": "kzoo", "format_version": FORMAT_VERSION, **config}
    (out / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.save_weights(out / WEIGHTS)


@contextlib.contextmanager
def atomic_dir(out, overwrite=False):
    """Yields a temporary dir beside `out`; renamed to `out` only if the block succeeds.

    An interrupted or failed write leaves nothing at `out`.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ModelDirError(f"{out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private (0700); OUT gets the usual mode
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(out, overwrite=False):
    """`atomic_dir` for a single file: yields a temporary path beside `out` (nothing there yet),
    renamed to `out` only if the block succeeds."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ModelDirError(f"{out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the writer creates it
    try:
        yield tmp
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
