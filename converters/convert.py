"""`kzoo convert`: a Hugging Face checkpoint dir -> a kzoo model dir.

Streams one tensor at a time from the checkpoint into the Keras variables, checks
every shape, then writes the model dir aside and renames it into place, so a failure
at any point leaves nothing at OUT.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from kzoo.converters import family_of, num_labels, sentence_transformers
from kzoo.converters.readers import CheckpointError, open_checkpoint
from kzoo.converters.tokenizers import TOKENIZER_FILES, build_tokenizer, check_options
from kzoo.converters.weights import load_table
from kzoo.errors import ModelDirError
from kzoo.families import find_preset
from kzoo.io import keras_internals, modeldir
from kzoo.io.arrays import as_tensor
from kzoo.io.atomic import atomic_dir, check_absent, overlaps
from kzoo.models import build_model, classes, new_head_paths
from kzoo.tasks import TASKS

# Models taking more tokens than this (bge-m3: 8,192) attend in blocks of ATTENTION_CHUNK queries: all heads'
# [S, S] scores at once would take 4.3 GB a layer at 8,192 tokens (XLM-R large).
LONG_INPUTS, ATTENTION_CHUNK = 4096, 1024
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")  # Transformers'
WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json", *TOKENIZER_FILES,
                   "modules.json", "sentence_bert_config.json", "*/config.json")  # (sentence-transformers' modules)


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
        config = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{src}: no config.json (a Hugging Face checkpoint dir has one)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: not a model config (a JSON object), but a {type(config).__name__}")
    if config.get("format") == "kzoo":
        raise CheckpointError(f"{src} is a kzoo model dir already (kzoo convert reads Hugging Face checkpoints; "
                              "every other command takes this dir as it is)")
    return config


def detect_task(hf, spec, names):
    """The checkpoint's head: its Transformers class (config.json's architectures), else its tensors."""
    for cls in hf.get("architectures") or []:
        if cls in spec.TASK_OF_CLASS:
            return spec.TASK_OF_CLASS[cls]
    return spec.task_from_names(names)


def _load_dense(model, st):
    """Fills the Dense layers of a sentence-transformers model from their modules' files; their paths."""
    variables = {v.path: v for v in model.weights}
    arrays = sentence_transformers.dense_weights(st)
    for path, value in arrays.items():
        if tuple(value.shape) != tuple(variables[path].shape):
            raise CheckpointError(f"{path}: shape {tuple(value.shape)} in the Dense module does not fit "
                                  f"{tuple(variables[path].shape)} (its config.json's in/out_features?)")
        keras_internals.initialize_from(variables[path], as_tensor(value, variables[path].dtype))
    return set(arrays)


def _labels(hf):
    """config.json's id2label as {"0": name, ...} for the model's classes (Transformers' LABEL_i where
    it names none)."""
    num = num_labels(hf)
    given = {str(k): str(v) for k, v in (hf.get("id2label") or {}).items()}
    return {str(i): given.get(str(i), f"LABEL_{i}") for i in range(num)}


def _check_tied(src, hf, ckpt, names, spec, prefix, task):
    """kzoo's LM heads project with the word embeddings, as a tied head does. A checkpoint saved with
    tie_word_embeddings false whose head weight differs from them (Transformers loads that one), or lacks it
    (Transformers initialises it at random), is refused rather than converted into other logits."""
    if hf.get("tie_word_embeddings", True) is not False or task not in ("masked_lm", "pretraining"):
        return
    for copy, source in spec.TIED_TO.items():
        source = prefix + source
        if source not in names:
            continue
        if copy not in names:
            raise CheckpointError(f"{src}: tie_word_embeddings is false but the checkpoint has no {copy} (Transformers "
                                  "would initialise that LM head at random)")
        if not np.array_equal(ckpt.get(copy), ckpt.get(source)):
            raise CheckpointError(f"{src}: tie_word_embeddings is false and {copy} is not {source}: an untied "
                                  "LM head, which kzoo does not load (its heads project with the word embeddings)")


def convert(src, out, *, task=None, labels=None, num_labels=None, problem_type=None, overwrite=False,
            progress=None, tokenizer_options=None):
    """Converts `src` into a kzoo model dir at `out`; returns a summary dict.

    task: override the head (a task name of kzoo.tasks); by default the checkpoint's own class decides.
        A head the checkpoint lacks (or, with `labels` / `num_labels`, has with another number of
        classes) is initialised as Transformers initialises it; the summary lists it ("initialized").
    labels, num_labels: the classes of a classifier or token classifier (names, or how many).
    problem_type: a classifier's single_label_classification / multi_label_classification / regression
        (Transformers' config key; what the pipelines' scores and the training loss follow).
    progress: optional factory `(total) -> advance(n)` for a progress bar.
    tokenizer_options: for the family's tokenizer builder (e.g. XLM's `pretokenize_by_lang=True`).
    """
    check_absent(out, overwrite)  # fail before the slow part
    tokenizer_options = tokenizer_options or {}
    src = resolve_source(src)
    if overlaps(out, src):
        raise CheckpointError(f"{out}: that is where the checkpoint {src} is; convert to another dir")
    st = sentence_transformers.read(src) if task in (None, "sentence_embedding") else None
    if task == "sentence_embedding" and st is None:
        raise CheckpointError(f"{src}: no modules.json: not a sentence-transformers model dir")
    if st is not None:  # its Transformer module's dir holds the Hugging Face checkpoint and tokenizer
        src = st.encoder
    hf = read_hf_config(src)
    hf.setdefault("_name_or_path", str(src))  # XLM tells its clm checkpoint apart by name only
    family, spec = family_of(hf)
    check_options(family, tokenizer_options)
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise CheckpointError(f"problem_type {problem_type!r}: expected one of {', '.join(PROBLEM_TYPES)}")
    with open_checkpoint(src) as ckpt:
        names = ckpt.names()
        new_head = task is not None or labels is not None or num_labels is not None
        task = task or ("sentence_embedding" if st else detect_task(hf, spec, names))
        try:
            named = classes(task, labels, num_labels)
        except ModelDirError as e:
            raise CheckpointError(str(e)) from None
        if named:
            hf = {**hf, "id2label": named["labels"]}
        if problem_type is not None and task != "classifier":
            raise CheckpointError(f"problem_type is for a classifier, not a {task}")
        backbone = spec.backbone_config(hf)
        notes = []
        if family.backbone_class().max_tokens(backbone) > LONG_INPUTS:
            backbone["attention_chunk_size"] = ATTENTION_CHUNK
            notes.append(f"inputs up to {family.backbone_class().max_tokens(backbone)} tokens: attention runs on "
                         f"blocks of {ATTENTION_CHUNK} queries, so that long texts fit in memory (the same numbers; "
                         "kzoo.load(dir, attention_chunk_size=None) for one block)")
        if task == "backbone" and family.backbone_class().has_pooler \
                and not any("pooler" in name for name in names):
            backbone["use_pooler"] = False  # Transformers would initialise it at random; kzoo leaves it out
            notes.append("the checkpoint has no pooler (a head's checkpoint, such as a masked LM's): the backbone "
                         "gives sequence_output only")
        config = {
            "architecture": family.name,
            "task": task,
            "preset": find_preset(family.name, backbone),
            "backbone": backbone,
            "task_config": st.task_config if st else spec.task_config(hf, task),
            "max_seq_length": st.max_seq_length if st else None,  # (sentence-transformers cuts texts to it)
            **(st.prompts if st and st.prompts["prompts"] else {}),  # (encode's prompt_name)
            "labels": _labels(hf) if TASKS[task].labelled else None,
            "problem_type": (problem_type or hf.get("problem_type")) if task == "classifier" else None,
            "source": {"path": str(src), "format": ckpt.format, "bytes": ckpt.nbytes},
        }
        with keras_internals.deferred_variables():
            try:
                model = build_model(config)
            except ModelDirError as e:
                raise CheckpointError(f"{src / 'config.json'}: {e}") from None
        prefix = spec.PREFIX if any(n.startswith(spec.PREFIX) for n in names) else ""
        _check_tied(src, hf, ckpt, names, spec, prefix, task)
        advance = progress(len(names)) if progress else None
        preloaded = _load_dense(model, st) if st else {}
        report = load_table(model, ckpt, spec.WEIGHTS, prefix=prefix, tied=spec.TIED,
                            ignored=spec.IGNORED + ((r"pooler\..*",) if st else ()),  # (sentence vectors: no pooler)
                            fresh=new_head_paths(model) if new_head else (), preloaded=preloaded, progress=advance)

    tokenizer = build_tokenizer(src, family, spec, **tokenizer_options)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        modeldir.save(model, config, tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
    return {
        "out": str(out),
        "architecture": family.name,
        "task": task,
        "preset": config["preset"],
        "parameters": model.count_params(),
        "checkpoint_format": config["source"]["format"],
        "report": report.summary(),
        "unexpected": report.unexpected,
        "initialized": report.initialized,
        "tokenizer": tokenizer is not None,
        "notes": notes,
    }
