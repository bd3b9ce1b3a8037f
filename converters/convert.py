"""`kzoo convert`: a Hugging Face checkpoint dir -> a kzoo model dir.

Streams one tensor at a time from the checkpoint into the Keras variables, checks
every shape, then writes the model dir aside and renames it into place, so a failure
at any point leaves nothing at OUT.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from kzoo import modeldir
from kzoo.converters.readers import CheckpointError, open_checkpoint
from kzoo.converters.weights import deferred_variables, load_table
from kzoo.presets import find_preset

FAMILIES = {  # Transformers model_type -> (kzoo architecture, weight-map module)
    "albert": ("albert", "kzoo.converters.albert"),
    "xlm-roberta": ("xlm-roberta", "kzoo.converters.xlm_roberta"),
    "xlm": ("xlm", "kzoo.converters.xlm"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt")
WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json", *TOKENIZER_FILES)


def resolve_source(src) -> Path:
    """A local checkpoint dir, or a hub id downloaded when the network allows it."""
    path = Path(src)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{src}: expected a checkpoint directory (config.json + weights)")
        return path
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(src)):
        raise CheckpointError(f"{src}: no such directory")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(str(src), allow_patterns=list(WEIGHT_PATTERNS))
        if not any(Path(local).glob("*.safetensors")):  # older repos only have .bin (read safely)
            local = snapshot_download(str(src), allow_patterns=[*WEIGHT_PATTERNS, "*.bin", "*.bin.index.json"])
    except Exception as e:
        raise CheckpointError(
            f"{src}: not a local directory, and fetching it from the Hugging Face hub failed "
            f"({type(e).__name__}); pass a local checkpoint dir"
        ) from None
    return Path(local)


def read_hf_config(src: Path) -> dict:
    file = src / "config.json"
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{src}: no config.json (a Hugging Face checkpoint dir has one)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None


def family_of(hf) -> tuple[str, object]:
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise CheckpointError(
            f"config.json: model_type {model_type!r} is not supported; kzoo converts {sorted(FAMILIES)}"
        )
    architecture, module = FAMILIES[model_type]
    return architecture, importlib.import_module(module)


def detect_task(hf, spec, names):
    for cls in hf.get("architectures") or []:
        if cls in spec.TASK_OF_CLASS:
            return spec.TASK_OF_CLASS[cls]
    return spec.task_from_names(names)


def convert(src, out, *, task=None, overwrite=False, progress=None, tokenizer_options=None):
    """Converts `src` into a kzoo model dir at `out`; returns a summary dict.

    task: override the head ("backbone", "masked_lm", "pretraining", "classifier");
          by default the checkpoint's own class decides.
    progress: optional factory `(total) -> advance(n)` for a progress bar.
    tokenizer_options: passed to the tokenizer's `from_hf_dir` (e.g. XLM's
          `pretokenize_by_lang=True`).
    """
    if Path(out).exists() and not overwrite:  # fail before the slow part
        raise modeldir.ModelDirError(f"{out} already exists (pass --overwrite to replace it)")
    src = resolve_source(src)
    hf = read_hf_config(src)
    hf.setdefault("_name_or_path", str(src))  # XLM tells its clm checkpoint apart by name only
    architecture, spec = family_of(hf)
    with open_checkpoint(src) as ckpt:
        names = ckpt.names()
        task = task or detect_task(hf, spec, names)
        backbone = spec.backbone_config(hf)
        labels = hf.get("id2label") if task == "classifier" else None
        config = {
            "architecture": architecture,
            "task": task,
            "preset": find_preset(architecture, backbone),
            "backbone": backbone,
            "task_config": spec.task_config(hf, task),
            "labels": labels,
            "source": {"path": str(src), "format": ckpt.format, "bytes": ckpt.nbytes},
        }
        with deferred_variables():
            model = modeldir.build_model(config)
        prefix = spec.PREFIX if any(n.startswith(spec.PREFIX) for n in names) else ""
        advance = progress(len(names)) if progress else None
        report = load_table(model, ckpt, spec.WEIGHTS,
                            prefix=prefix, tied=spec.TIED, ignored=spec.IGNORED, progress=advance)

    tokenizer = _tokenizer(src, architecture, tokenizer_options or {})
    with modeldir.atomic_dir(out, overwrite=overwrite) as tmp:
        modeldir.save(model, config, tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
    return {
        "out": str(out),
        "architecture": architecture,
        "task": task,
        "preset": config["preset"],
        "parameters": model.count_params(),
        "checkpoint_format": config["source"]["format"],
        "report": report.summary(),
        "unexpected": report.unexpected,
        "tokenizer": tokenizer is not None,
    }


def _tokenizer(src, architecture, options):
    if not any((src / f).exists() for f in TOKENIZER_FILES):
        return None
    if architecture == "xlm":
        from kzoo.xlm_tokenizer import XLMTokenizer

        return XLMTokenizer.from_hf_dir(src, **options)
    from kzoo.tokenizer import SentencePieceTokenizer

    return SentencePieceTokenizer.from_hf_dir(src, family=architecture, **options)
