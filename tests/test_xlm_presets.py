"""XLM presets against the published architectures: hub configs and Transformers' parameter counts."""

import json
from pathlib import Path

import keras
import pytest

from kzoo.io import modeldir
from kzoo.models import build_model
from kzoo.converters import xlm as spec
from kzoo.families import PRESETS, find_preset

DATA = Path(__file__).parent / "data"
COUNTS = json.loads((DATA / "param_counts.json").read_text())  # Transformers 5.23, meta device
XLM = ["xlm-mlm-enfr-1024", "xlm-clm-enfr-1024", "xlm-mlm-100-1280"]
EXPECTED_COUNTS = {  # the same numbers, spelled out: tied weights counted once
    "xlm-mlm-enfr-1024": {"XLMModel": 141_784_064, "XLMWithLMHeadModel": 141_848_203},
    "xlm-clm-enfr-1024": {"XLMModel": 141_784_064, "XLMWithLMHeadModel": 141_848_203},
    "xlm-mlm-100-1280": {"XLMModel": 571_496_960, "XLMWithLMHeadModel": 571_696_960},
}


def test_all_presets_listed():
    assert sorted(n for n in PRESETS if PRESETS[n]["architecture"] == "xlm") == sorted(XLM)
    assert {n: COUNTS[n] for n in XLM} == EXPECTED_COUNTS


@pytest.mark.parametrize("name", XLM)
def test_preset_equals_hub_config(name):
    # tests/data/hf_configs/xlm-clm-enfr-1024.json carries a `_kzoo_note` saying it was trained
    # as a causal LM; the hub's own form is recognised by its name (tests/test_xlm_parity.py).
    hf = json.loads((DATA / "hf_configs" / f"{name}.json").read_text())
    backbone = spec.backbone_config(hf)
    assert backbone == PRESETS[name]["backbone"]
    assert find_preset("xlm", backbone) == name


def test_preset_details():
    enfr, clm, xlm100 = (PRESETS[n]["backbone"] for n in XLM)
    assert {**enfr, "trained_causal": True} == clm and not enfr["trained_causal"]
    assert (enfr["num_languages"], enfr["use_lang_emb"], enfr["languages"]) == (2, True, ["en", "fr"])
    assert (xlm100["hidden_dim"], xlm100["intermediate_dim"], xlm100["num_layers"]) == (1280, 5120, 16)
    assert (xlm100["num_languages"], xlm100["use_lang_emb"]) == (100, False)
    assert xlm100["languages"][23] == "en" and xlm100["languages"][-1] == "zh_yue"


@pytest.mark.parametrize("name", ["xlm-mlm-enfr-1024", "xlm-mlm-100-1280"])  # clm: same shapes
@pytest.mark.parametrize("cls_name", ["XLMModel", "XLMWithLMHeadModel"])
def test_parameter_counts(name, cls_name):
    task = spec.TASK_OF_CLASS[cls_name]
    keras.utils.clear_session()
    model = build_model({**PRESETS[name], "task": task})
    count = model.count_params()
    del model
    keras.utils.clear_session()
    assert count == EXPECTED_COUNTS[name][cls_name]
