"""kzoo.converters: Hugging Face PyTorch checkpoints -> kzoo model dirs.

    readers.py, torch_bin.py, tensors.py  read safetensors / sharded / .bin checkpoints (no torch)
    weights.py                            the one loop applying a weight table to a Keras model
    albert.py, xlm_roberta.py, xlm.py     one per family: its weight table, config keys, tokenizer files
    sentencepiece.py, xlm_tokenizer.py    build kzoo's tokenizers from Hugging Face tokenizer files
    sentence_transformers.py              a sentence-transformers dir's modules -> the sentence_embedding head
    tokenizers.py                         which of the two a family's tokenizer format needs
    convert.py                            `kzoo convert`
    verify.py                             `kzoo verify`: a model dir against its PyTorch reference

A family's module here is named by its declaration (kzoo.families: `Family.converter`).
"""

from __future__ import annotations

import importlib

from kzoo.converters.tensors import CheckpointError
from kzoo.families import FAMILIES


def spec_of(family):
    """The converter module of a family declaration: WEIGHTS, MODEL_TYPE, TASK_OF_CLASS, ..."""
    return importlib.import_module(f"kzoo.converters.{family.converter}")


def num_labels(hf: dict) -> int:
    """How many classes a Transformers config's head has: its id2label's (which wins over a num_labels
    that disagrees, as in Transformers' PretrainedConfig), else num_labels, else 2."""
    return len(hf.get("id2label") or {}) or hf.get("num_labels") or 2


def family_of(hf: dict):
    """(family declaration, converter module) for a Hugging Face config dict (its model_type)."""
    model_type = hf.get("model_type") if isinstance(hf, dict) else None
    for family in FAMILIES.values():
        spec = spec_of(family)
        if spec.MODEL_TYPE == model_type:
            return family, spec
    types = sorted(spec_of(f).MODEL_TYPE for f in FAMILIES.values())
    raise CheckpointError(f"config.json: model_type {model_type!r} is not supported; kzoo converts {types}")
