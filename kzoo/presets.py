"""The published checkpoints' architectures, as kzoo backbone configs.

Sizes are the published hub configs. Parameter counts (tests/data/param_counts.json)
equal Transformers' for every preset and class: `tests/test_presets.py` checks it.
"""

from __future__ import annotations

_ALBERT_SIZES = {  # hidden, layers, heads, intermediate
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "xlarge": (2048, 24, 16, 8192),
    "xxlarge": (4096, 12, 64, 16384),
}


def _albert(size, version):
    hidden, layers, heads, intermediate = _ALBERT_SIZES[size]
    # v1 used exact (erf) GELU and dropout 0.1 (none for xxlarge); v2 the tanh GELU, no dropout.
    dropout = 0.1 if version == 1 and size != "xxlarge" else 0.0
    return {
        "architecture": "albert",
        "backbone": {
            "vocabulary_size": 30000,
            "num_layers": layers,
            "num_heads": heads,
            "hidden_dim": hidden,
            "intermediate_dim": intermediate,
            "embedding_dim": 128,
            "num_groups": 1,
            "num_inner_repetitions": 1,
            "activation": "gelu" if version == 1 else "gelu_new",
            "dropout": dropout,
            "attention_dropout": dropout,
            "max_sequence_length": 512,
            "num_segments": 2,
            "layer_norm_epsilon": 1e-12,
            "initializer_range": 0.02,
        },
    }


def _xlm_roberta(hidden, layers, heads, intermediate):
    return {
        "architecture": "xlm-roberta",
        "backbone": {
            "vocabulary_size": 250002,
            "num_layers": layers,
            "num_heads": heads,
            "hidden_dim": hidden,
            "intermediate_dim": intermediate,
            "activation": "gelu",
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "max_sequence_length": 514,
            "num_segments": 1,
            "pad_token_id": 1,
            "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02,
        },
    }


PRESETS = {
    **{f"albert-{size}-v{version}": _albert(size, version) for size in _ALBERT_SIZES for version in (1, 2)},
    "xlm-roberta-base": _xlm_roberta(768, 12, 12, 3072),
    "xlm-roberta-large": _xlm_roberta(1024, 24, 16, 4096),
}


def find_preset(architecture, backbone):
    """The preset whose architecture equals `backbone` (dropout aside), or None."""
    def key(cfg):
        return {k: v for k, v in cfg.items() if k not in ("dropout", "attention_dropout", "use_pooler", "name")}

    for name, preset in PRESETS.items():
        if preset["architecture"] == architecture and key(preset["backbone"]) == key(backbone):
            return name
    return None
