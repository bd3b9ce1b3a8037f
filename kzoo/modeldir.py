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
    model = build_model(config)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ModelDirError(f"{path}: {WEIGHTS} is missing")
    try:
        model.load_weights(weights)
    except Exception as e:  # h5py / Keras errors are long; name the file and the gist
        raise ModelDirError(f"{weights}: could not load weights ({str(e).splitlines()[0]})") from None
    model.kzoo_config = config
    return model


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
