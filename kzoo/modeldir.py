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
import threading
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
    assignment creates the variable instead, from the array itself: large datasets are read into
    64-byte-aligned arrays (`_aligned_h5_reads`) that TF adopts without a copy (DLPack;
    `tf.convert_to_tensor` would hold two more copies). Loading then peaks at about the weights'
    size: xlm-roberta-base 1.01x its fp32 weights, 3.5x with random init and assignment.
    """
    import numpy as np
    from keras.src.backend.common import global_state

    from kzoo.converters.weights import as_tensor

    def create_from(variable):
        def assign(value):
            del variable.assign  # the class's own method again
            value = np.asarray(value)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{variable.path}: shape {tuple(value.shape)} in the file, "
                                 f"{tuple(variable.shape)} in the model")
            tensor = as_tensor(value, variable.dtype)  # adopted when `_aligned_h5_reads` read it
            variable._initializer = lambda shape, dtype: tensor
            variable._deferred_initialize()

        return assign

    pending = [v for v in model.variables if v._value is None]
    for v in pending:
        v.assign = create_from(v)
    try:
        with _aligned_h5_reads():
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
    with _blockwise_h5_writes():
        model.save_weights(out / WEIGHTS)


# The two patches below swap a method on Keras' class, for every thread: one at a time.
_H5_PATCH = threading.RLock()


@contextlib.contextmanager
def _aligned_h5_reads():
    """Makes Keras' `load_weights` read large float32 datasets into 64-byte-aligned arrays, which
    `_load_deferred` hands to TF as they are (no copy beside them)."""
    import h5py
    import numpy as np
    from keras.src.saving import saving_lib

    from kzoo.converters.readers import aligned_empty

    store = saving_lib.H5IOStore
    original = store.__getitem__

    def getitem(self, key):
        value = saving_lib.safe_get_h5_dataset(self._h5_entry_group, key)
        if (not isinstance(value, h5py.Dataset) or value.dtype != np.float32 or "dtype" in value.attrs
                or value.size < 2**16):
            return original(self, key)
        out = aligned_empty(value.shape, np.float32)
        value.read_direct(out)
        return out

    with _H5_PATCH:
        store.__getitem__ = getitem
        try:
            yield
        finally:
            store.__getitem__ = original


@contextlib.contextmanager
def _blockwise_h5_writes(min_bytes=32 << 20, block_bytes=8 << 20):
    """Makes Keras' `save_weights` write large variables in row blocks.

    Keras turns each variable into a numpy array before writing it (`np.array` of the tensor: two
    transient copies), which made saving the peak of a conversion: 2.0x the checkpoint for
    xlm-roberta-large, 2.4x for xlm-roberta-base (its embedding is 70 % of the weights). Blocks of
    `block_bytes` keep it at the variables' own size (1.02x). Same file layout as Keras' (one
    contiguous dataset per variable); Keras' internals are pinned (keras==3.15.1), and the file is
    compared with Keras' own in the tests.
    """
    import keras
    import numpy as np
    from keras.src.saving import saving_lib

    store = saving_lib.H5IOStore
    original = store.__setitem__

    def setitem(self, key, value):
        shape = tuple(getattr(value, "shape", ()))
        if (not isinstance(value, keras.Variable) or value.dtype != "float32" or not shape
                or 4 * int(np.prod(shape)) < min_bytes):
            return original(self, key, value)
        if not self._h5_entry_initialized:
            self._create_h5_group(self._h5_entry_path)
        dataset = self._h5_entry_group.create_dataset(key, shape=shape, dtype="float32")
        rows = max(1, block_bytes // max(1, 4 * int(np.prod(shape[1:]))))
        for start in range(0, shape[0], rows):
            dataset[start:start + rows] = keras.ops.convert_to_numpy(value[start:start + rows])

    with _H5_PATCH:
        store.__setitem__ = setitem
        try:
            yield
        finally:
            store.__setitem__ = original


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
