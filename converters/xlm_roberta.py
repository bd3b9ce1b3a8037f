"""XLM-RoBERTa: Transformers checkpoint names, config keys and tokenizer files -> kzoo."""

from kzoo.converters import num_labels
from kzoo.converters.tokenizers import SentencePieceFiles
from kzoo.converters.tensors import CheckpointError
from kzoo.io.arrays import transpose

T = transpose
MODEL_TYPE = "xlm-roberta"  # config.json's model_type


def _linear(src, dst):
    return [(f"{src}.weight", f"{dst}/kernel", T), (f"{src}.bias", f"{dst}/bias", None)]


def _norm(src, dst):
    return [(f"{src}.weight", f"{dst}/gamma", None), (f"{src}.bias", f"{dst}/beta", None)]


LAYER = "encoder.layer.{i}"
# Checkpoint names relative to the backbone ("roberta." is stripped for head models).
WEIGHTS = [  # (checkpoint name pattern, Keras variable path, transform)
    ("embeddings.word_embeddings.weight", "token_embedding/embeddings", None),
    ("embeddings.position_embeddings.weight", "position_embedding/embeddings", None),
    ("embeddings.token_type_embeddings.weight", "segment_embedding/embeddings", None),
    *_norm("embeddings.LayerNorm", "embeddings_layer_norm"),
    *_linear(f"{LAYER}.attention.self.query", "transformer_layer_{i}/query"),
    *_linear(f"{LAYER}.attention.self.key", "transformer_layer_{i}/key"),
    *_linear(f"{LAYER}.attention.self.value", "transformer_layer_{i}/value"),
    *_linear(f"{LAYER}.attention.output.dense", "transformer_layer_{i}/attention_output"),
    *_norm(f"{LAYER}.attention.output.LayerNorm", "transformer_layer_{i}/attention_layer_norm"),
    *_linear(f"{LAYER}.intermediate.dense", "transformer_layer_{i}/intermediate"),
    *_linear(f"{LAYER}.output.dense", "transformer_layer_{i}/output"),
    *_norm(f"{LAYER}.output.LayerNorm", "transformer_layer_{i}/output_layer_norm"),
    *_linear("pooler.dense", "pooler"),
    # Heads.
    *_linear("lm_head.dense", "mlm_dense"),
    *_norm("lm_head.layer_norm", "mlm_layer_norm"),
    ("lm_head.bias", "mlm_bias/bias", None),
    *_linear("classifier.dense", "classifier_dense"),
    *_linear("classifier.out_proj", "classifier"),
    *_linear("classifier", "classifier"),  # XLMRobertaForTokenClassification
    *_linear("qa_outputs", "qa_outputs"),
]
PREFIX = "roberta."
# The decoder is tied to the word embeddings and its bias to lm_head.bias;
# Transformers 5 leaves both out of the file, older saves carry copies.
TIED = ("lm_head.decoder.weight", "lm_head.decoder.bias")
# The weight copy and what it copies (under PREFIX): equal unless the config unties them.
TIED_TO = {"lm_head.decoder.weight": "embeddings.word_embeddings.weight"}
IGNORED = (r"embeddings\.position_ids", r"embeddings\.token_type_ids")

# XLMRobertaTokenizer (Transformers 5: Unigram over the SentencePiece model's scores)
TOKENIZER = SentencePieceFiles(
    spm_file="sentencepiece.bpe.model",
    specials=dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
                  pad_token="<pad>", cls_token="<s>", mask_token="<mask>"),
    unk_id=3,
    template="roberta",
    fairseq=True,
)

TASK_OF_CLASS = {
    "XLMRobertaModel": "backbone",
    "XLMRobertaForMaskedLM": "masked_lm",
    "XLMRobertaForSequenceClassification": "classifier",
    "XLMRobertaForTokenClassification": "token_classifier",
    "XLMRobertaForQuestionAnswering": "question_answering",
    "XLMRobertaForMultipleChoice": "multiple_choice",
}

# Transformers' XLMRobertaConfig defaults, for configs that leave keys out.
HF_DEFAULTS = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
    initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=1, classifier_dropout=None,
)

CONFIG_KEYS = [  # (Transformers XLMRobertaConfig key, kzoo XLMRobertaBackbone argument)
    ("vocab_size", "vocabulary_size"),
    ("num_hidden_layers", "num_layers"),
    ("num_attention_heads", "num_heads"),
    ("hidden_size", "hidden_dim"),
    ("intermediate_size", "intermediate_dim"),
    ("hidden_act", "activation"),
    ("hidden_dropout_prob", "dropout"),
    ("attention_probs_dropout_prob", "attention_dropout"),
    ("max_position_embeddings", "max_sequence_length"),
    ("type_vocab_size", "num_segments"),
    ("pad_token_id", "pad_token_id"),
    ("layer_norm_eps", "layer_norm_epsilon"),
    ("initializer_range", "initializer_range"),
]


def backbone_config(hf):
    hf = {**HF_DEFAULTS, **hf}
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"config.json: position_embedding_type {hf['position_embedding_type']!r} "
                              "is not supported (only 'absolute')")
    return {ours: hf[theirs] for theirs, ours in CONFIG_KEYS}


def task_config(hf, task):
    hf = {**HF_DEFAULTS, **hf}
    if task == "multiple_choice":
        return {"classifier_dropout": hf["hidden_dropout_prob"]}
    if task not in ("classifier", "token_classifier"):
        return {}
    dropout = hf["classifier_dropout"] if hf["classifier_dropout"] is not None else hf["hidden_dropout_prob"]
    return {"num_classes": num_labels(hf), "classifier_dropout": dropout}


def hf_config(backbone, **extra):
    """kzoo backbone config -> Transformers XLMRobertaConfig dict (to build references)."""
    hf = {theirs: backbone[ours] for theirs, ours in CONFIG_KEYS}
    return {"model_type": "xlm-roberta", "bos_token_id": 0, "eos_token_id": 2, **hf, **extra}


def task_from_names(names):
    names = set(names)
    if any(n.startswith("lm_head.") for n in names):
        return "masked_lm"
    if "classifier.out_proj.weight" in names:
        return "classifier"
    if "qa_outputs.weight" in names:
        return "question_answering"
    if "classifier.weight" in names:  # multiple choice on the pooled output, else on every token
        return "multiple_choice" if any("pooler." in n for n in names) else "token_classifier"
    return "backbone"
