"""XLM: Transformers checkpoint names and config keys -> kzoo (its tokenizer: kzoo.converters.xlm_tokenizer)."""

import logging
import re
from pathlib import PurePath

from kzoo.converters import num_labels
from kzoo.converters.tensors import CheckpointError
from kzoo.io.arrays import transpose

T = transpose
MODEL_TYPE = "xlm"  # config.json's model_type
log = logging.getLogger(__name__)

# Checkpoint names relative to the backbone ("transformer." is stripped for head models).
WEIGHTS = [  # (checkpoint name pattern, Keras variable path, transform)
    ("embeddings.weight", "token_embedding/embeddings", None),
    ("position_embeddings.weight", "position_embedding/embeddings", None),
    ("lang_embeddings.weight", "language_embedding/embeddings", None),
    ("layer_norm_emb.weight", "embeddings_layer_norm/gamma", None),
    ("layer_norm_emb.bias", "embeddings_layer_norm/beta", None),
    *[
        (f"{src}.{kind}", f"transformer_layer_{{i}}/{dst}/{var}", T if var == "kernel" else None)
        for src, dst in [
            ("attentions.{i}.q_lin", "query"),
            ("attentions.{i}.k_lin", "key"),
            ("attentions.{i}.v_lin", "value"),
            ("attentions.{i}.out_lin", "attention_output"),
            ("ffns.{i}.lin1", "intermediate"),
            ("ffns.{i}.lin2", "output"),
        ]
        for kind, var in [("weight", "kernel"), ("bias", "bias")]
    ],
    *[
        (f"{src}.{kind}", f"transformer_layer_{{i}}/{dst}/{var}", None)
        for src, dst in [
            ("layer_norm1.{i}", "attention_layer_norm"),
            ("layer_norm2.{i}", "output_layer_norm"),
        ]
        for kind, var in [("weight", "gamma"), ("bias", "beta")]
    ],
    # Head: the projection's weight is the token embedding (tied), its bias is its own.
    ("pred_layer.proj.bias", "lm_bias/bias", None),
    ("classifier.weight", "classifier/kernel", T),  # XLMForTokenClassification
    ("classifier.bias", "classifier/bias", None),
    ("qa_outputs.weight", "qa_outputs/kernel", T),  # XLMForQuestionAnsweringSimple
    ("qa_outputs.bias", "qa_outputs/bias", None),
    ("sequence_summary.summary.weight", "sequence_summary/kernel", T),  # XLMForSequenceClassification,
    ("sequence_summary.summary.bias", "sequence_summary/bias", None),  # XLMForMultipleChoice
    ("logits_proj.weight", "logits_proj/kernel", T),  # XLMForMultipleChoice
    ("logits_proj.bias", "logits_proj/bias", None),
]
PREFIX = "transformer."
# Transformers 5 leaves the tied projection out of the file; older saves carry a copy.
TIED = ("pred_layer.proj.weight",)
# The weight copy and what it copies (under PREFIX): equal unless the config unties them.
TIED_TO = {"pred_layer.proj.weight": "embeddings.weight"}
IGNORED = (r"position_ids",)

TASK_OF_CLASS = {
    "XLMModel": "backbone",
    "XLMWithLMHeadModel": "masked_lm",
    "XLMForTokenClassification": "token_classifier",
    "XLMForQuestionAnsweringSimple": "question_answering",
    "XLMForSequenceClassification": "classifier",
    "XLMForMultipleChoice": "multiple_choice",
}

# Transformers' XLMConfig defaults, for hub configs that leave keys out.
HF_DEFAULTS = dict(
    vocab_size=30145, emb_dim=2048, n_layers=12, n_heads=16, dropout=0.1, attention_dropout=0.1,
    gelu_activation=True, sinusoidal_embeddings=False, causal=False, asm=False, n_langs=1,
    use_lang_emb=True, max_position_embeddings=512, layer_norm_eps=1e-12, init_std=0.02,
    mask_token_id=0, lang_id=0, summary_type="first", summary_use_proj=True, summary_activation=None,
    summary_proj_to_labels=True, summary_first_dropout=0.1,
)
SUMMARY_KEYS = ("summary_type", "summary_use_proj", "summary_proj_to_labels", "summary_activation",
                "summary_first_dropout", "summary_last_dropout")  # XLMSequenceSummary's, kept as they are
# Special ids: hub files spell them `*_index`, Transformers 5 writes `*_token_id` (same values).
SPECIAL_IDS = [  # (Transformers 5 key, older key, default, kzoo key)
    ("pad_token_id", "pad_index", 2, "pad_token_id"),
    ("bos_token_id", "bos_index", 0, "bos_token_id"),
    ("eos_token_id", "eos_index", 1, "eos_token_id"),
]

# What Transformers' `generate` feeds XLM (`XLMWithLMHeadModel.prepare_inputs_for_generation`):
# the token appended after the text, at whose position the next token is predicted
# (`mask_token_id`: 0 = <s> by default and on the hub, not the MLM mask <special1> = `mask_index`),
# and the language id of every position (`lang_id`; None = no language embedding).
GENERATION_KEYS = [  # (Transformers XLMConfig key, kzoo XLMBackbone argument)
    ("mask_token_id", "generation_mask_token_id"),
    ("lang_id", "generation_lang_id"),
]

CONFIG_KEYS = [  # (Transformers XLMConfig key, kzoo XLMBackbone argument)
    ("vocab_size", "vocabulary_size"),
    ("n_layers", "num_layers"),
    ("n_heads", "num_heads"),
    ("emb_dim", "hidden_dim"),
    ("dropout", "dropout"),
    ("attention_dropout", "attention_dropout"),
    ("max_position_embeddings", "max_sequence_length"),
    ("n_langs", "num_languages"),
    ("use_lang_emb", "use_lang_emb"),
    ("causal", "causal"),
    ("sinusoidal_embeddings", "sinusoidal_embeddings"),
    ("layer_norm_eps", "layer_norm_epsilon"),
    ("init_std", "initializer_range"),
]


def backbone_config(hf, source=None):
    """Transformers XLMConfig dict -> kzoo XLMBackbone config.

    source: the checkpoint's path or hub id, when known (see `trained_causal`)."""
    hf = {**HF_DEFAULTS, **hf}
    config = {ours: hf[theirs] for theirs, ours in CONFIG_KEYS}
    config["intermediate_dim"] = 4 * hf["emb_dim"]  # hard-coded in Transformers' XLMModel
    config["activation"] = "gelu" if hf["gelu_activation"] else "relu"
    for new, old, default, ours in SPECIAL_IDS:
        value = hf.get(new)
        config[ours] = value if value is not None else hf.get(old, default)
    for theirs, ours in GENERATION_KEYS:
        config[ours] = hf[theirs]
    config["languages"] = languages(hf)
    config["trained_causal"] = trained_causal(hf, source)
    return config


def languages(hf):
    """Language codes ordered by id, from `id2lang` (or `lang2id`); None if neither is given."""
    if hf.get("id2lang"):
        by_id = {int(i): code for i, code in hf["id2lang"].items()}
    elif hf.get("lang2id"):
        by_id = {int(i): code for code, i in hf["lang2id"].items()}
    else:
        return None
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(f"config.json: language ids {sorted(by_id)} are not 0..{len(by_id) - 1}")
    return [by_id[i] for i in range(len(by_id))]


# xlm-clm-enfr-1024 (like xlm-clm-ende-1024) was trained as a causal LM, yet its hub config says
# causal=false and is otherwise identical to xlm-mlm-enfr-1024's; its tensors have the same names
# and shapes too. So nothing in the checkpoint tells the two apart, only what it is called:
#   * a "clm" word in the model's name: Transformers' `_name_or_path` (in configs saved by
#     Transformers 4), or `source` (the checkpoint dir: a local "xlm-clm-enfr-1024", or a hub
#     download's ".../models--FacebookAI--xlm-clm-enfr-1024/snapshots/<sha>"). Only the last path
#     component and hub-cache "models--org--name" components are read, so a "clm" elsewhere in
#     the path (a user's directory) does not count;
#   * or an explicit mark in config.json: `"trained_causal": true` (the manual override, also
#     what `hf_config` writes), or a kzoo `_kzoo_note` saying "causal LM" (tests/data fixtures).
# The forward pass keeps `causal` as the config says (Transformers' behaviour, for parity);
# `trained_causal` only tells generation to attend causally.
_CLM_WORD = re.compile(r"(?:^|[^a-z0-9])clm(?:[^a-z0-9]|$)")


def _model_names(name_or_path):
    parts = PurePath(str(name_or_path)).parts
    return [p for p in parts[:-1] if p.startswith("models--")] + list(parts[-1:])


def trained_causal(hf, source=None):
    """Whether the checkpoint was trained as a causal LM (see above); warns when the config
    says `causal=false` although it was."""
    if hf.get("causal"):
        return True
    note = str(hf.get("_kzoo_note", ""))
    names = [n for s in (hf.get("_name_or_path"), source) if s for n in _model_names(s)]
    clm_names = [n for n in names if _CLM_WORD.search(n.lower())]
    hint = (
        bool(clm_names)
        or bool(hf.get("trained_causal"))
        or re.search(r"causal\s+lm", note, re.IGNORECASE) is not None
    )
    if hint:
        log.warning(
            "%s was trained as a causal LM but its config says causal=false: the forward pass "
            "keeps causal=false (as Transformers does); trained_causal=true makes generation "
            "attend causally", clm_names[0] if clm_names else "this XLM checkpoint",
        )
    return hint


def task_config(hf, task):
    hf = {**HF_DEFAULTS, **hf}
    if task == "masked_lm" and hf["asm"]:
        raise CheckpointError(
            "config.json: asm=true (an adaptive-softmax LM head) is not supported by kzoo; "
            "convert it with --task backbone to keep the encoder only"
        )
    num_classes = num_labels(hf)
    if task == "token_classifier":
        return {"num_classes": num_classes, "classifier_dropout": hf["dropout"]}
    if task in ("classifier", "multiple_choice"):
        if hf["summary_type"] not in ("first", "last", "mean", "cls_index"):
            raise CheckpointError(f"config.json: summary_type {hf['summary_type']!r} is not supported by kzoo "
                                  "(first, last, mean, cls_index)")
        return {"num_classes": num_classes, **{k: hf[k] for k in SUMMARY_KEYS if k in hf}}
    return {}


def hf_config(backbone, **extra):
    """kzoo backbone config -> Transformers XLMConfig dict (to build references)."""
    if backbone["intermediate_dim"] != 4 * backbone["hidden_dim"]:
        raise ValueError("Transformers' XLM needs intermediate_dim == 4 * hidden_dim")
    hf = {theirs: backbone[ours] for theirs, ours in CONFIG_KEYS}
    hf["gelu_activation"] = backbone["activation"] == "gelu"
    for new, _, _, ours in SPECIAL_IDS:
        hf[new] = backbone[ours]
    for theirs, ours in GENERATION_KEYS:
        hf[theirs] = backbone.get(ours, HF_DEFAULTS[theirs])
    if backbone.get("languages") is not None:
        hf["id2lang"] = dict(enumerate(backbone["languages"]))
        hf["lang2id"] = {code: i for i, code in enumerate(backbone["languages"])}
    if backbone.get("trained_causal") and not backbone["causal"]:
        hf["trained_causal"] = True
    return {"model_type": "xlm", **hf, **extra}


def task_from_names(names):
    """Which Transformers class wrote these tensors, when config.json does not say."""
    if any(n.startswith("pred_layer.") for n in names):
        return "masked_lm"
    if "qa_outputs.weight" in names:
        return "question_answering"
    if "logits_proj.weight" in names:
        return "multiple_choice"
    if "sequence_summary.summary.weight" in names:
        return "classifier"
    return "token_classifier" if "classifier.weight" in names else "backbone"
