"""Every class of every declared family against the PyTorch reference (Transformers 5.23), max abs diff
<= 1e-4 on right- and left-padded batches and a row of padding only; also as .bin with tied copies, in
fp16/bf16 and sharded.

Parametrized over kzoo.families: a new family gets these by being declared (tests/families.py).
"""

import pytest
import torch

from families import NAMES, hf_classes, masked_lm_class, tiny_hf_config
from kzoo.tasks import TASKS
from reference import convert_and_verify

CLASSES = [pytest.param(name, cls, id=f"{name}-{cls}") for name in NAMES for cls in hf_classes(name)]


@pytest.mark.parametrize("name, cls_name", CLASSES)
def test_every_class(tmp_path, name, cls_name):
    summary, report = convert_and_verify(tmp_path, cls_name, tiny_hf_config(name))
    task = hf_classes(name)[cls_name]
    assert (summary["architecture"], summary["task"], summary["unexpected"]) == (name, task, [])
    checked = {r["output"] for r in report["rows"]}
    declared = set(TASKS[task].outputs)
    assert "sequence_output" in checked and checked - {"sequence_output"} <= declared
    assert checked & declared  # the head's own output (XLM's backbone has no pooled_output)


@pytest.mark.parametrize("name", NAMES)
def test_bin_with_tied_copies(tmp_path, name):
    summary, _ = convert_and_verify(tmp_path, masked_lm_class(name), tiny_hf_config(name), fmt="bin")
    assert summary["checkpoint_format"] == "bin" and "tied" in summary["report"]
    assert summary["unexpected"] == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_checkpoint_loads_as_fp32(tmp_path, name, dtype):
    summary, _ = convert_and_verify(tmp_path, masked_lm_class(name), tiny_hf_config(name), dtype=dtype)
    assert summary["parameters"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_sharded_safetensors(tmp_path, name):
    summary, _ = convert_and_verify(tmp_path, masked_lm_class(name), tiny_hf_config(name), max_shard_size="20KB")
    assert summary["checkpoint_format"] == "sharded-safetensors"


@pytest.mark.parametrize("name", NAMES)
def test_max_tokens_is_the_longest_input_the_positions_take(name):
    """The declared longest input (kzoo.models: max_tokens) runs; one token more runs out of positions."""
    import numpy as np
    import tensorflow as tf

    from families import tiny_backbone
    from kzoo.models import build_model, input_limits

    config = {"architecture": name, "task": "backbone", "backbone": tiny_backbone(name)}
    model = build_model(config)
    _, longest = input_limits(name, config["backbone"])

    def run(length):
        inputs = {k: np.zeros((1, length), "int32") for k in model.input}
        inputs.update(token_ids=np.full((1, length), 7, "int32"), padding_mask=np.ones((1, length), "int32"))
        with tf.device("/CPU:0"):  # (an out-of-range gather raises on CPU)
            return model(inputs, training=False)

    run(longest)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        run(longest + 1)
