"""Presets against the published architectures: Transformers' configs and parameter counts."""

import json
from pathlib import Path

import keras
import pytest

from kzoo.io import modeldir
from kzoo.models import build_model
from kzoo.converters import albert as albert_map
from kzoo.converters import xlm_roberta as xlmr_map
from kzoo.converters import family_of
from kzoo.families import PRESETS, find_preset

DATA = Path(__file__).parent / "data"
COUNTS = json.loads((DATA / "param_counts.json").read_text())  # Transformers 5.23, meta device
TASK_OF_CLASS = {**albert_map.TASK_OF_CLASS, **xlmr_map.TASK_OF_CLASS}


ALBERT_AND_XLMR = sorted(n for n in PRESETS if PRESETS[n]["architecture"] in ("albert", "xlm-roberta"))


@pytest.mark.parametrize("name", ALBERT_AND_XLMR)
def test_preset_equals_hub_config(name):
    hf = json.loads((DATA / "hf_configs" / f"{name}.json").read_text())
    _, spec = family_of(hf)
    assert spec.backbone_config(hf) == PRESETS[name]["backbone"]
    assert find_preset(PRESETS[name]["architecture"], spec.backbone_config(hf)) == name


# ALBERT v1 and v2 share their shapes; one build per size and class keeps this fast.
SIZED = [n for n in ALBERT_AND_XLMR if not n.endswith("-v1")]


@pytest.mark.parametrize("name", SIZED)
def test_parameter_counts(name):
    for cls_name, want in COUNTS[name].items():
        task = TASK_OF_CLASS[cls_name]
        keras.utils.clear_session()
        model = build_model({**PRESETS[name], "task": task})
        assert model.count_params() == want, (name, cls_name)
        del model
