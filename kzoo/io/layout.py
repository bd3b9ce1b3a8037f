"""What an export looks like on disk: the contract between `kzoo.export` (writes) and
`kzoo.runtime` (reads). Defined here once.

    SavedModel   OUT/1/saved_model.pb, variables/     TensorFlow Serving's layout (version 1)
                 OUT/1/assets.extra/kzoo/             the sidecar: config.json + tokenizer files
                 OUT.report.json
    TFLite       OUT.tflite
                 OUT.tflite.kzoo/                     the sidecar
                 OUT.tflite.report.json

Signatures: `serving_default` (ids in: token_ids, padding_mask, ... int32 [batch, length]) and,
with a tokenizer inside, `serve_text` (text: string [batch]).
"""

from __future__ import annotations

from pathlib import Path

from kzoo.errors import RunnerError

IDS_SIGNATURE = "serving_default"
TEXT_SIGNATURE = "serve_text"
TEXT_INPUT = "text"
SAVEDMODEL_VERSION = "1"
SIDECAR = "kzoo"  # the sidecar dir's name inside a SavedModel's assets.extra/, and a .tflite's suffix


def report_path(out) -> Path:
    return Path(f"{out}.report.json")


def savedmodel_sidecar(version_dir) -> Path:
    return Path(version_dir) / "assets.extra" / SIDECAR


def tflite_sidecar(path) -> Path:
    return Path(f"{path}.{SIDECAR}")


def kind_of(path) -> str:
    """"tflite", "savedmodel" or "modeldir" (by what is on disk)."""
    path = Path(path)
    if path.suffix == ".tflite":
        if not path.is_file():
            raise RunnerError(f"{path}: no such .tflite file")
        return "tflite"
    if path.is_dir() and ((path / "saved_model.pb").is_file() or _versions(path)):
        return "savedmodel"
    if path.is_dir() and not (path / "config.json").is_file() and any(
            (d / "variables").is_dir() or (d / "assets.extra").is_dir()
            for d in (path, *(p for p in path.iterdir() if p.name.isdigit()))):
        raise RunnerError(f"{path}: a SavedModel without its saved_model.pb (an export cut short, or copied "
                          "in part?); export it again")
    return "modeldir"  # (a missing or wrong path gets the model dir's own one-line error)


def _versions(path: Path):
    return sorted((p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
                  key=lambda p: int(p.name))


def savedmodel_version_dir(path) -> Path:
    """The dir holding saved_model.pb: `path` itself, or its highest numbered version (Serving layout)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = _versions(path)
    if not versions:
        raise RunnerError(f"{path}: no saved_model.pb (nor a numbered version dir holding one)")
    return versions[-1]


def sidecar_of(path) -> Path:
    """Where the config and tokenizer of `path` live: a model dir itself, or an export's sidecar."""
    kind = kind_of(path)
    if kind == "modeldir":
        return Path(path)
    if kind == "savedmodel":
        return savedmodel_sidecar(savedmodel_version_dir(path))
    return tflite_sidecar(path)
