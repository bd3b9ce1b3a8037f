"""ALBERT: Transformers checkpoint names, config keys and tokenizer files -> kzoo."""

from kzoo.converters import num_labels
from kzoo.converters.tokenizers import SentencePieceFiles
from kzoo.io.arrays import transpose

T = transpose
MODEL_TYPE = "albert"  # config.json's model_type

# Checkpoint names relative to the backbone ("albert." is stripped for head models).
WEIGHTS = [  # (checkpoint name pattern, Keras variable path, transform)
    ("embeddings.word_embeddings.weight", "token_embedding/embeddings", None),
    ("embeddings.position_embeddings.weight", "position_embedding/embeddings", None),
    ("embeddings.token_type_embeddings.weight", "segment_embedding/embeddings", None),
    ("embeddings.LayerNorm.weight", "embeddings_layer_norm/gamma", None),
    ("embeddings.LayerNorm.bias", "embeddings_layer_norm/beta", None),
    ("encoder.embedding_hidden_mapping_in.weight", "embedding_projection/kernel", T),
    ("encoder.embedding_hidden_mapping_in.bias", "embedding_projection/bias", None),
    *[
        (f"encoder.albert_layer_groups.{{g}}.albert_layers.{{i}}.{src}.{kind}",
         f"group_{{g}}_inner_{{i}}/{dst}/{var}", T if var == "kernel" else None)
        for src, dst in [
            ("attention.query", "query"),
            ("attention.key", "key"),
            ("attention.value", "value"),
            ("attention.dense", "attention_output"),
            ("ffn", "intermediate"),
            ("ffn_output", "output"),
        ]
        for kind, var in [("weight", "kernel"), ("bias", "bias")]
    ],
    *[
        (f"encoder.albert_layer_groups.{{g}}.albert_layers.{{i}}.{src}.{kind}",
         f"group_{{g}}_inner_{{i}}/{dst}/{var}", None)
        for src, dst in [
            ("attention.LayerNorm", "attention_layer_norm"),
            ("full_layer_layer_norm", "output_layer_norm"),
        ]
        for kind, var in [("weight", "gamma"), ("bias", "beta")]
    ],
    ("pooler.weight", "pooler/kernel", T),
    ("pooler.bias", "pooler/bias", None),
    # Heads.
    ("predictions.dense.weight", "mlm_dense/kernel", T),
    ("predictions.dense.bias", "mlm_dense/bias", None),
    ("predictions.LayerNorm.weight", "mlm_layer_norm/gamma", None),
    ("predictions.LayerNorm.bias", "mlm_layer_norm/beta", None),
    ("predictions.bias", "mlm_bias/bias", None),
    ("sop_classifier.classifier.weight", "sop_classifier/kernel", T),
    ("sop_classifier.classifier.bias", "sop_classifier/bias", None),
    ("classifier.weight", "classifier/kernel", T),
    ("classifier.bias", "classifier/bias", None),
    ("qa_outputs.weight", "qa_outputs/kernel", T),
    ("qa_outputs.bias", "qa_outputs/bias", None),
]
PREFIX = "albert."
# The decoder is tied to the word embeddings and its bias to predictions.bias;
# Transformers 5 leaves both out of the file, older saves carry copies.
TIED = ("predictions.decoder.weight", "predictions.decoder.bias")
# The weight copy and what it copies (under PREFIX): equal unless the config unties them.
TIED_TO = {"predictions.decoder.weight": "embeddings.word_embeddings.weight"}
IGNORED = (r"embeddings\.position_ids", r"embeddings\.token_type_ids")

# AlbertTokenizer (Transformers 5: the `tokenizers` library)
TOKENIZER = SentencePieceFiles(
    spm_file="spiece.model",
    specials=dict(bos_token="[CLS]", eos_token="[SEP]", unk_token="<unk>", sep_token="[SEP]",
                  pad_token="<pad>", cls_token="[CLS]", mask_token="[MASK]"),
    unk_id=1,
    template="bert",
    normalizer="albert",
)

TASK_OF_CLASS = {
    "AlbertModel": "backbone",
    "AlbertForMaskedLM": "masked_lm",
    "AlbertForPreTraining": "pretraining",
    "AlbertForSequenceClassification": "classifier",
    "AlbertForTokenClassification": "token_classifier",
    "AlbertForQuestionAnswering": "question_answering",
    "AlbertForMultipleChoice": "multiple_choice",
}

# Transformers' AlbertConfig defaults, for hub configs that leave keys out.
HF_DEFAULTS = dict(
    vocab_size=30000, embedding_size=128, hidden_size=4096, num_hidden_layers=12,
    num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384, inner_group_num=1,
    hidden_act="gelu_new", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02,
    layer_norm_eps=1e-12, classifier_dropout_prob=0.1,
)

CONFIG_KEYS = [  # (Transformers AlbertConfig key, kzoo AlbertBackbone argument)
    ("vocab_size", "vocabulary_size"),
    ("num_hidden_layers", "num_layers"),
    ("num_attention_heads", "num_heads"),
    ("hidden_size", "hidden_dim"),
    ("intermediate_size", "intermediate_dim"),
    ("embedding_size", "embedding_dim"),
    ("num_hidden_groups", "num_groups"),
    ("inner_group_num", "num_inner_repetitions"),
    ("hidden_act", "activation"),
    ("hidden_dropout_prob", "dropout"),
    ("attention_probs_dropout_prob", "attention_dropout"),
    ("max_position_embeddings", "max_sequence_length"),
    ("type_vocab_size", "num_segments"),
    ("layer_norm_eps", "layer_norm_epsilon"),
    ("initializer_range", "initializer_range"),
]


def backbone_config(hf):
    hf = {**HF_DEFAULTS, **hf}
    return {ours: hf[theirs] for theirs, ours in CONFIG_KEYS}


def task_config(hf, task):
    hf = {**HF_DEFAULTS, **hf}
    classes = num_labels(hf)
    if task == "classifier":
        return {"num_classes": classes, "classifier_dropout": hf["classifier_dropout_prob"]}
    if task == "token_classifier":  # (AlbertForTokenClassification: hidden_dropout_prob where that is None)
        dropout = hf["classifier_dropout_prob"]
        return {"num_classes": classes, "classifier_dropout": hf["hidden_dropout_prob"] if dropout is None else dropout}
    if task == "multiple_choice":
        return {"classifier_dropout": hf["classifier_dropout_prob"]}
    if task == "pretraining":
        return {"num_sop_labels": classes, "classifier_dropout": hf["classifier_dropout_prob"]}
    return {}


def hf_config(backbone, **extra):
    """kzoo backbone config -> Transformers AlbertConfig dict (to build references)."""
    hf = {theirs: backbone[ours] for theirs, ours in CONFIG_KEYS}
    return {"model_type": "albert", "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3, **hf, **extra}


def task_from_names(names):
    """Which Transformers class wrote these tensors, when config.json does not say."""
    names = set(names)
    if any(n.startswith("sop_classifier.") for n in names):
        return "pretraining"
    if any(n.startswith("predictions.") for n in names):
        return "masked_lm"
    if "qa_outputs.weight" in names:
        return "question_answering"
    if "classifier.weight" in names:  # on the pooled output (sequence) or on every token (no pooler)
        return "classifier" if any("pooler." in n for n in names) else "token_classifier"
    return "backbone"
