"""ALBERT against the PyTorch reference (Transformers 5.23), max abs diff <= 1e-4."""

import pytest
import torch

from reference import TINY_ALBERT, convert_and_verify

CLASSES = ["AlbertModel", "AlbertForMaskedLM", "AlbertForPreTraining", "AlbertForSequenceClassification"]


def check(tmp_path, cls_name, **kwargs):
    return convert_and_verify(tmp_path, cls_name, TINY_ALBERT, **kwargs)


@pytest.mark.parametrize("cls_name", CLASSES)
def test_every_class(tmp_path, cls_name):
    summary, report = check(tmp_path, cls_name)
    assert summary["unexpected"] == []
    outputs = {r["output"] for r in report["rows"]}
    expected = {
        "AlbertModel": {"sequence_output", "pooled_output"},
        "AlbertForMaskedLM": {"logits", "sequence_output"},
        "AlbertForPreTraining": {"mlm_logits", "sop_logits", "sequence_output"},
        "AlbertForSequenceClassification": {"logits", "sequence_output"},
    }[cls_name]
    assert outputs == expected


def test_exact_gelu_v1(tmp_path):
    check(tmp_path, "AlbertForPreTraining", hidden_act="gelu")


def test_one_shared_group(tmp_path):
    check(tmp_path, "AlbertForMaskedLM", num_hidden_groups=1, inner_group_num=1, num_hidden_layers=3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_loads_as_fp32(tmp_path, dtype):
    summary, _ = check(tmp_path, "AlbertForMaskedLM", dtype=dtype)
    assert summary["parameters"] > 0


def test_bin_with_tied_copies(tmp_path):
    summary, _ = check(tmp_path, "AlbertForPreTraining", fmt="bin")
    assert summary["checkpoint_format"] == "bin"
    assert "tied" in summary["report"]


def test_sharded_safetensors(tmp_path):
    summary, _ = check(tmp_path, "AlbertForMaskedLM", max_shard_size="20KB")
    assert summary["checkpoint_format"] == "sharded-safetensors"
