"""The kzoo model dir: `config.json` + `model.weights.h5` + tokenizer files.

    config.json  {"format": "kzoo", "format_version": 1, "architecture", "task",
                  "preset", "backbone": {...}, "task_config": {...}, "labels", "source"}

Written by `kzoo convert` (and `save`), read by everything else; kzoo.models.load_model builds the
model from it. Loading creates each variable straight from the file's array (kzoo.io.keras_internals):
about 1.0x the weights in memory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kzoo.errors import ModelDirError

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
FORMAT_VERSION = 1
REQUIRED = {"architecture": str, "task": str, "backbone": dict}  # what every reader of a config relies on


def read_config(path) -> dict:
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
    if not isinstance(config, dict) or config.get("format") != "kzoo":
        raise ModelDirError(
            f"{file}: not a kzoo config (a Hugging Face checkpoint? convert it first: kzoo convert {path} OUT)"
        )
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ModelDirError(f"{file}: format_version {config['format_version']} is newer than this kzoo")
    for key, kind in REQUIRED.items():
        if not isinstance(config.get(key), kind):
            raise ModelDirError(f"{file}: {key!r} is {'missing' if key not in config else 'not a ' + kind.__name__}"
                                " (an edited or damaged config? convert the checkpoint again)")
    return config


def load_weights(model, path):
    """Fills `model` (built from the dir's config under `keras_internals.deferred_variables()`) from the
    model dir's weights file: each variable is created from the file's array (about 1.0x the weights)."""
    from kzoo.io import keras_internals

    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        raise ModelDirError(f"{path}: {WEIGHTS} is missing")
    try:
        keras_internals.load_weights_adopting(model, weights)
    except Exception as e:  # h5py / Keras errors are long; name the file and the gist
        raise ModelDirError(f"{weights}: could not load weights ({_gist(e)}); is config.json the one they were "
                            "saved with?") from None


def _gist(error):
    """The line of a loading error that says what failed (Keras leads with "A total of N objects could
    not be loaded. Example error message for object ...:" and puts the message after it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("A total of"):
        return f"{lines[0].split('.')[0].lower()}, e.g. {lines[-1]}"
    return lines[0] if lines else type(error).__name__


def save(model, config, out):
    """Writes a model dir at `out` (config + weights); tokenizer files are added by the caller."""
    from kzoo.io import keras_internals

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"format": "kzoo", "format_version": FORMAT_VERSION, **config}
    (out / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    keras_internals.save_weights_blockwise(model, out / WEIGHTS)


def copy_sidecar(model_dir, dest) -> Path:
    """Copies the model dir's config.json and tokenizer files (everything but the weights) to `dest`:
    what an export carries so that kzoo.runtime can run it (see kzoo.io.layout)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(model_dir).iterdir()):
        if f.is_file() and f.name != WEIGHTS:
            shutil.copyfile(f, dest / f.name)
    return dest
