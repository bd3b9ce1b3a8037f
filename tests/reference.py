"""Reference checkpoints made on the fly: Transformers 5 PyTorch models, random weights.

Every parameter (LayerNorm scales and biases included) is redrawn, so a swapped or
missed tensor cannot hide behind Transformers' ones/zeros initialisation.
"""

from __future__ import annotations

import functools

import torch
import transformers

# Two passes through one group of two inner layers: the weights each pass shares, at half the XLA compile
# and trace time of four passes through two groups (tests/models/test_albert.py: GROUPED_ALBERT)
TINY_ALBERT = dict(
    vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_hidden_groups=1,
    inner_group_num=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
    type_vocab_size=2, hidden_act="gelu_new", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
)


@functools.cache
def loaded(path):
    """kzoo.runtime.load(path), once a process. A pipeline test builds many pipelines on one model dir, and
    loading and tracing a model (~2 s, even a tiny one) is most of such a test's time; tests of loading itself
    pass the path. Only for dirs nothing rewrites."""
    import kzoo.runtime

    return kzoo.runtime.load(path)


def randomize(model, seed=0, std=0.2):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def lively(model, seed=0):
    """Weights under which outputs depend on the input: LayerNorm scales near 1, small biases, matrices
    at std 0.3 (with every parameter at std 0.2, `randomize`, ALBERT's tanh pooler saturates and a
    sequence classifier gives the same logits for every text)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("layer_norm" in name.lower() or "layernorm" in name.lower()) and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if "embeddings" in name else 0.3))
    return model


def transformers_init(model, seed=0):
    """The weights Transformers gave the model (LayerNorm scales 1, biases 0, matrices at
    initializer_range), drawn under `make_checkpoint`'s seed: DESIGN's reference checkpoint."""
    return model


def make_checkpoint(out_dir, cls_name, config, *, dtype=torch.float32, fmt="safetensors",
                    max_shard_size=None, seed=0, weights=randomize, **config_kwargs):
    """Saves `transformers.<cls_name>` built from `config` (a Config instance or dict) at `out_dir`;
    weights: how its parameters are drawn (`randomize`, `lively`, `transformers_init`)."""
    cls = getattr(transformers, cls_name)
    if isinstance(config, dict):
        config = cls.config_class(**{**config, **config_kwargs})
    torch.manual_seed(seed)  # (Transformers' own draw, which `transformers_init` keeps)
    model = weights(cls(config).eval(), seed=seed).to(dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "bin":
        config.architectures = [cls_name]
        config.save_pretrained(out_dir)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, out_dir / "pytorch_model.bin")
    else:
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(out_dir, **kwargs)
    return out_dir


def model_with_tokenizer(tmp, cls_name, config, tokenizer_dir, out="out", weights=randomize):
    """A random `cls_name` checkpoint with the tokenizer files of `tokenizer_dir` (its vocabulary size
    when it has a tokenizer.json), converted at tmp/out; returns (checkpoint dir, model dir)."""
    import json
    import shutil

    from kzoo.converters.convert import convert

    tokenizer_json = tokenizer_dir / "tokenizer.json"
    if tokenizer_json.exists():
        config = {**config, "vocab_size": len(json.loads(tokenizer_json.read_text())["model"]["vocab"])}
    src = make_checkpoint(tmp / "ref", cls_name, config, weights=weights)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, src / f.name)
    convert(src, tmp / out)
    return src, tmp / out


def convert_and_verify(tmp_path, cls_name, config, **kwargs):
    """A random `cls_name` checkpoint, converted, then run beside PyTorch on right- and
    left-padded batches (left padding shifts RoBERTa's positions, so both matter) and on one with a
    row of padding only."""
    from kzoo.converters.convert import convert
    from kzoo.converters.verify import verify

    src = make_checkpoint(tmp_path / "ref", cls_name, config, **kwargs)
    summary = convert(src, tmp_path / "out")
    report = verify(tmp_path / "out", src)
    bad = [r for r in report["rows"] if not r["ok"]]
    assert {r["batch"] for r in report["rows"]} == {"right-padded", "left-padded", "padding-only row"}
    assert not bad, bad
    return summary, report

TINY_XLMR = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    layer_norm_eps=1e-5, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
)
