"""XLM-RoBERTa against the PyTorch reference (Transformers 5.23), max abs diff <= 1e-4."""

import numpy as np
import pytest

from kzoo.converters.convert import convert
from kzoo.converters.verify import reference_inputs, verify
from reference import TINY_XLMR, convert_and_verify, make_checkpoint

CLASSES = ["XLMRobertaModel", "XLMRobertaForMaskedLM", "XLMRobertaForSequenceClassification"]


def check(tmp_path, cls_name, **kwargs):
    return convert_and_verify(tmp_path, cls_name, TINY_XLMR, **kwargs)


@pytest.mark.parametrize("cls_name", CLASSES)
def test_every_class(tmp_path, cls_name):
    summary, report = check(tmp_path, cls_name)
    assert summary["unexpected"] == []
    assert summary["architecture"] == "xlm-roberta"


def test_bin_with_tied_copies(tmp_path):
    summary, _ = check(tmp_path, "XLMRobertaForMaskedLM", fmt="bin")
    assert "tied" in summary["report"]


def test_longest_sequence_uses_last_position(tmp_path):
    """512 tokens of 514 positions: the last real token sits at position 513."""
    src = make_checkpoint(tmp_path / "ref", "XLMRobertaModel", TINY_XLMR)
    convert(src, tmp_path / "out")
    length = TINY_XLMR["max_position_embeddings"] - 2
    batch = reference_inputs(99, batch=2, length=length, pad_id=1, num_segments=1)
    report = verify(tmp_path / "out", src, batches={"full-length": batch})
    assert report["ok"], report["rows"]
