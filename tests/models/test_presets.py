"""Presets against the published architectures: the hub configs and Transformers' parameter counts,
for every preset of every declared family."""

import json
from pathlib import Path

import keras
import pytest

from kzoo.converters import family_of
from kzoo.families import FAMILIES, PRESETS, find_preset
from kzoo.models import build_model

DATA = Path(__file__).parents[1] / "data"
COUNTS = json.loads((DATA / "param_counts.json").read_text())  # Transformers 5.23, meta device


def test_every_preset_has_a_hub_config_and_counts():
    assert sorted(PRESETS) == sorted(p.stem for p in (DATA / "hf_configs").glob("*.json")) == sorted(COUNTS)
    assert sorted(PRESETS) == sorted(n for f in FAMILIES.values() for n in f.presets)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_equals_hub_config(name):
    # hf_configs/xlm-clm-enfr-1024.json carries a `_kzoo_note` saying it was trained as a causal LM;
    # the hub's own form is recognised by its name (tests/models/test_xlm.py).
    hf = json.loads((DATA / "hf_configs" / f"{name}.json").read_text())
    family, spec = family_of(hf)
    assert family.name == PRESETS[name]["architecture"]
    assert spec.backbone_config(hf) == PRESETS[name]["backbone"]
    assert find_preset(family.name, spec.backbone_config(hf)) == name


# ALBERT v1 and v2 share their shapes, as do XLM's enfr mlm and clm: one build per shape and class.
SIZED = [n for n in sorted(PRESETS) if not n.endswith("-v1") and n != "xlm-clm-enfr-1024"]


@pytest.mark.parametrize("name", SIZED)
def test_parameter_counts(name):
    _, spec = family_of(json.loads((DATA / "hf_configs" / f"{name}.json").read_text()))
    for cls_name, want in COUNTS[name].items():
        keras.utils.clear_session()
        with keras.StatelessScope(initialize_variables=False):  # shapes, no values: no gigabytes to draw
            model = build_model({**PRESETS[name], "task": spec.TASK_OF_CLASS[cls_name]})
            count = model.count_params()
        del model
        assert count == want, (name, cls_name)
    keras.utils.clear_session()


def test_same_shapes_same_counts():
    for a, b in [*[(f"albert-{s}-v1", f"albert-{s}-v2") for s in ("base", "large", "xlarge", "xxlarge")],
                 ("xlm-mlm-enfr-1024", "xlm-clm-enfr-1024")]:
        assert COUNTS[a] == COUNTS[b]


def test_xlm_preset_details():
    enfr, clm, xlm100 = (PRESETS[n]["backbone"] for n in ("xlm-mlm-enfr-1024", "xlm-clm-enfr-1024", "xlm-mlm-100-1280"))
    assert {**enfr, "trained_causal": True} == clm and not enfr["trained_causal"]
    assert (enfr["num_languages"], enfr["use_lang_emb"], enfr["languages"]) == (2, True, ["en", "fr"])
    assert (xlm100["hidden_dim"], xlm100["intermediate_dim"], xlm100["num_layers"]) == (1280, 5120, 16)
    assert (xlm100["num_languages"], xlm100["use_lang_emb"]) == (100, False)
    assert xlm100["languages"][23] == "en" and xlm100["languages"][-1] == "zh_yue"
    assert COUNTS["xlm-mlm-enfr-1024"] == {"XLMModel": 141_784_064, "XLMWithLMHeadModel": 141_848_203}
    assert COUNTS["xlm-mlm-100-1280"] == {"XLMModel": 571_496_960, "XLMWithLMHeadModel": 571_696_960}
