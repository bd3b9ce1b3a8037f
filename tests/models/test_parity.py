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


@pytest.mark.parametrize("name", NAMES)
def test_an_untied_lm_head_is_refused(tmp_path, name):
    """tie_word_embeddings false: Transformers keeps the file's own head weight, which kzoo's LM heads (the word
    embeddings) cannot hold, so converting is an error, not other logits; with tie_word_embeddings true the
    same kind of file converts."""
    from kzoo.converters import CheckpointError
    from kzoo.converters.convert import convert
    from reference import make_checkpoint

    src = make_checkpoint(tmp_path / "untied", masked_lm_class(name), tiny_hf_config(name), tie_word_embeddings=False)
    with pytest.raises(CheckpointError, match="tie_word_embeddings is false and .* is not .*an untied LM head"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    convert(src, tmp_path / "encoder", task="backbone")  # (the encoder alone has no such head)


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


@pytest.mark.parametrize("name, extra", [(n, {}) for n in NAMES] + [("xlm", {"causal": True})],
                         ids=[*NAMES, "xlm-causal"])
def test_attention_in_blocks_of_queries_holds_to_the_reference(tmp_path, name, extra):
    """attention_chunk_size (what convert sets for inputs over 4,096 tokens): each block of queries' scores in
    turn, the same numbers as all at once, to the PyTorch reference; also compiled by XLA."""
    import numpy as np
    import tensorflow as tf

    from kzoo.converters.convert import convert
    from kzoo.converters.verify import reference_inputs, verify
    from kzoo.models import load_model
    from reference import make_checkpoint

    src = make_checkpoint(tmp_path / "ref", masked_lm_class(name), tiny_hf_config(name, **extra))
    convert(src, tmp_path / "out")
    model = load_model(tmp_path / "out", attention_chunk_size=5)
    report = verify(tmp_path / "out", src, model=model)
    assert report["ok"], [r for r in report["rows"] if not r["ok"]]
    x = reference_inputs(99, length=17, num_segments=1)
    x = {k: tf.constant(x.get(k, np.zeros_like(x["token_ids"]))) for k in model.input}
    compiled = tf.function(lambda batch: model.backbone(batch)["sequence_output"], jit_compile=True)
    np.testing.assert_allclose(compiled(x), model.backbone(x)["sequence_output"], atol=1e-5)


def test_convert_sets_blocks_of_queries_for_long_inputs(tmp_path):
    import json

    from kzoo.converters.convert import convert
    from reference import make_checkpoint

    src = make_checkpoint(tmp_path / "ref", "XLMRobertaModel", tiny_hf_config("xlm-roberta",
                                                                              max_position_embeddings=8194))
    summary = convert(src, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["backbone"]["attention_chunk_size"] == 1024
    assert any("blocks of 1024 queries" in note for note in summary["notes"])
