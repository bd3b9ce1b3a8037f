"""XLM-RoBERTa's own traits against the PyTorch reference (the classes: tests/models/test_parity.py)."""

from kzoo.converters.convert import convert
from kzoo.converters.verify import reference_inputs, verify
from reference import TINY_XLMR, make_checkpoint


def test_longest_sequence_uses_last_position(tmp_path):
    """512 tokens of 514 positions: the last real token sits at position 513."""
    src = make_checkpoint(tmp_path / "ref", "XLMRobertaModel", TINY_XLMR)
    convert(src, tmp_path / "out")
    length = TINY_XLMR["max_position_embeddings"] - 2
    batch = reference_inputs(99, batch=2, length=length, pad_id=1, num_segments=1)
    report = verify(tmp_path / "out", src, batches={"full-length": batch})
    assert report["ok"], report["rows"]
