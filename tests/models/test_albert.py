"""ALBERT's own options against the PyTorch reference (the classes: tests/models/test_parity.py)."""

from reference import TINY_ALBERT, convert_and_verify

# passes 0, 1 through group 0 and passes 2, 3 through group 1 (Transformers: group int(pass / (4 / 2)))
GROUPED_ALBERT = {**TINY_ALBERT, "num_hidden_layers": 4, "num_hidden_groups": 2}


def test_shared_groups_every_head(tmp_path):
    """Two groups of two inner layers each over four passes (num_hidden_groups=2, inner_group_num=2)."""
    summary, report = convert_and_verify(tmp_path, "AlbertForPreTraining", GROUPED_ALBERT)
    assert {r["output"] for r in report["rows"]} == {"mlm_logits", "sop_logits", "sequence_output"}


def test_exact_gelu_v1(tmp_path):
    convert_and_verify(tmp_path, "AlbertForPreTraining", {**TINY_ALBERT, "hidden_act": "gelu"})
