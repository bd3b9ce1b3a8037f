"""Test configs derived from the family declarations (kzoo.families), so that every declared family
gets the generic tests (tests/models/test_parity.py, test_presets.py) by being declared."""

from __future__ import annotations

from kzoo.converters import spec_of
from kzoo.families import FAMILIES

# A published architecture shrunk to test size: the same family options, tiny dimensions.
TINY = {"vocabulary_size": 99, "num_layers": 2, "num_heads": 4, "hidden_dim": 32, "intermediate_dim": 128,
        "embedding_dim": 16, "max_sequence_length": 64}
NAMES = list(FAMILIES)


def tiny_backbone(name):
    """The family's first preset with TINY's sizes (every key TINY has that the preset has too)."""
    preset = next(iter(FAMILIES[name].presets.values()))
    return {**preset, **{k: v for k, v in TINY.items() if k in preset}}


def tiny_hf_config(name, **overrides):
    """The Transformers config dict of `tiny_backbone(name)` (the converter writes it back)."""
    return {**spec_of(FAMILIES[name]).hf_config(tiny_backbone(name)), **overrides}


def hf_classes(name):
    """{Transformers class name: kzoo task} of the family."""
    return dict(spec_of(FAMILIES[name]).TASK_OF_CLASS)


def masked_lm_class(name):
    return next(cls for cls, task in hf_classes(name).items() if task == "masked_lm")
