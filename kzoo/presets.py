"""The published checkpoints' architectures, as kzoo backbone configs (one dict per family,
read by its declaration in kzoo.families).

Sizes are the published hub configs. Parameter counts (tests/data/param_counts.json)
equal Transformers' for every preset and class: the preset tests check it.
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
    }


def _xlm_roberta(hidden, layers, heads, intermediate):
    return {
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
    }


ALBERT = {f"albert-{size}-v{version}": _albert(size, version) for size in _ALBERT_SIZES for version in (1, 2)}
XLM_ROBERTA = {
    "xlm-roberta-base": _xlm_roberta(768, 12, 12, 3072),
    "xlm-roberta-large": _xlm_roberta(1024, 24, 16, 4096),
}


# --- XLM (Lample & Conneau, 2019) -----------------------------------------------------------
# Language codes in id order (Transformers' id2lang); backbone["languages"][lang_id] is the code.
_XLM_100_LANGUAGES = (
    "af als am an ang ar arz ast az bar be bg bn br bs ca ceb ckb cs cy da de el en eo es et eu fa "
    "fi fr fy ga gan gl gu he hi hr hu hy ia id is it ja jv ka kk kn ko ku la lb lt lv mk ml mn mr "
    "ms my nds ne nl nn no oc pl pt ro ru scn sco sh si simple sk sl sq sr sv sw ta te th tl tr tt "
    "uk ur uz vi war wuu yi zh zh_classical zh_min_nan zh_yue"
).split()


def _xlm(hidden, layers, heads, vocabulary, languages, use_lang_emb, trained_causal=False):
    return {
        "vocabulary_size": vocabulary,
        "num_layers": layers,
        "num_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": 4 * hidden,
        "activation": "gelu",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "max_sequence_length": 512,
        "num_languages": len(languages),
        "use_lang_emb": use_lang_emb,
        "causal": False,
        "sinusoidal_embeddings": False,
        "layer_norm_epsilon": 1e-12,
        "initializer_range": 0.02,
        "pad_token_id": 2,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "languages": list(languages),
        # xlm-clm-*: trained as a causal LM although the hub config says causal=false;
        # the forward pass stays bidirectional (as in Transformers), generation is causal.
        "trained_causal": trained_causal,
        # Transformers' `generate` appends token 0 and feeds language 0 (see kzoo.pipelines.generation).
        "generation_mask_token_id": 0,
        "generation_lang_id": 0,
    }


XLM = {
    "xlm-mlm-enfr-1024": _xlm(1024, 6, 8, 64139, ["en", "fr"], use_lang_emb=True),
    "xlm-clm-enfr-1024": _xlm(1024, 6, 8, 64139, ["en", "fr"], use_lang_emb=True, trained_causal=True),
    "xlm-mlm-100-1280": _xlm(1280, 16, 16, 200000, _XLM_100_LANGUAGES, use_lang_emb=False),
}
