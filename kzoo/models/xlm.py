"""XLM (Lample & Conneau, 2019) as Keras 3 functional models.

Reads top to bottom like Transformers' `modeling_xlm.py`:
  embeddings: token + position (learned, or the fixed sin/cos table) + language (only when
  `num_languages > 1 and use_lang_emb`) + token type, where token types are looked up in the
  *token* table (XLM has no segment table) -> LayerNorm -> dropout -> zero the padding
  -> `num_layers` post-LN transformer layers, the padding zeroed again after each one.
No pooler. Heads: the LM head, a decoder tied to the token embedding plus its own bias; one
model serves MLM (fill-mask) and causal generation.

Inputs, all int32 [B, S]: `token_ids`, `padding_mask`, `segment_ids`, `lang_ids` (the
model always takes all four; `lang_ids` is unused without a language table). A negative
segment or language id stands for "not given": that position gets no token-type / language
embedding, as when Transformers is called without `token_type_ids` / `langs` (what its own
tokenizer does by default).

Attention: bidirectional over the non-padding keys; with `causal=True`, the lower triangle
(key j <= query i) and nothing else, exactly as Transformers does it (padding is not masked
there: with left padding the real tokens see the zeroed pad positions).

Config keys beyond the architecture:
  languages       language codes ordered by id (`languages[lang_id]`), from Transformers'
                  `id2lang`/`lang2id`; None when the checkpoint names none.
  trained_causal  the checkpoint was trained as a causal LM (xlm-clm-*), whatever `causal`
                  says. The forward pass follows `causal` (Transformers' behaviour, for parity);
                  generation should attend causally when either flag is set.
  pad/bos/eos_token_id  the vocabulary's special ids (XLM's `pad_index` & co.).
  generation_mask_token_id, generation_lang_id  what Transformers' `generate` feeds the model
                  (its config's `mask_token_id`, `lang_id`; see kzoo.pipelines.generation).
"""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
from keras import ops

from kzoo.models.layers import (
    MASK_BIAS, Backbone, Bias, Choices, TaskModel, TransformerLayer, attention_bias, choice_inputs, dense,
    get_activation, int_inputs,
)
from kzoo.models.layers import QuestionAnswering, SentenceEmbedding, TokenClassifier  # noqa: F401  (heads every family shares)


@keras.saving.register_keras_serializable(package="kzoo")
class SinusoidalPositions(keras.initializers.Initializer):
    """XLM's fixed position table (Transformers' `create_sinusoidal_embeddings`):
    row p, feature j = sin(p / 10000^(2*(j//2)/dim)) for even j, cos(...) for odd j.
    Computed in float64 like Transformers, then cast."""

    def __call__(self, shape, dtype=None):
        positions, dim = shape
        j = np.arange(dim)
        angles = np.arange(positions)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
        table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
        return ops.convert_to_tensor(table.astype("float32"), dtype=dtype or "float32")


@keras.saving.register_keras_serializable(package="kzoo")
class XLMAttentionBias(keras.layers.Layer):
    """padding_mask [B, S] -> additive attention bias: the padding mask, or with `causal`
    the lower triangle alone (Transformers' `get_masks`). A layer: the triangle needs S."""

    def __init__(self, causal=False, mask_bias=MASK_BIAS, **kwargs):
        super().__init__(**kwargs)
        self.causal = causal
        self.mask_bias = mask_bias

    def call(self, padding_mask):
        if not self.causal:
            return attention_bias(padding_mask, self.mask_bias)
        # Transformers' causal mask ignores the padding: the triangle over all-visible keys.
        return attention_bias(ops.ones_like(padding_mask), self.mask_bias, causal=True)

    def get_config(self):
        return {**super().get_config(), "causal": self.causal, "mask_bias": self.mask_bias}


def _optional_embedding(embedding, ids):
    """embedding(ids), with zeros where ids < 0 (Transformers' "not given")."""
    given = ops.expand_dims(ops.cast(ops.greater_equal(ids, 0), "float32"), -1)
    return embedding(ops.maximum(ids, 0)) * given


@keras.saving.register_keras_serializable(package="kzoo")
class XLMBackbone(Backbone):
    """XLM encoder. Inputs `token_ids`, `segment_ids`, `padding_mask`, `lang_ids` ([B, S]
    int32). Returns {"sequence_output": [B, S, H]}, zero at padding positions."""

    has_pooler = False

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim=None,  # Transformers hard-codes 4 * hidden_dim
        activation="gelu",  # exact (erf) GELU, or "relu" when gelu_activation=false
        dropout=0.1,
        attention_dropout=0.1,
        max_sequence_length=512,
        num_languages=1,
        use_lang_emb=True,
        causal=False,
        sinusoidal_embeddings=False,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        pad_token_id=2,
        bos_token_id=0,
        eos_token_id=1,
        languages=None,
        trained_causal=False,
        generation_mask_token_id=0,
        generation_lang_id=0,
        mask_bias=MASK_BIAS,
        attention_chunk_size=None,
        **kwargs,
    ):
        intermediate_dim = intermediate_dim or 4 * hidden_dim
        languages = list(languages) if languages is not None else None
        config = Backbone.arguments(locals())
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        has_languages = num_languages > 1 and use_lang_emb

        # === Layers ===
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=True, embeddings_initializer=init,
            name="token_embedding",
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            max_sequence_length,
            initializer=SinusoidalPositions() if sinusoidal_embeddings else init,
            trainable=not sinusoidal_embeddings,  # the sin/cos table is fixed
            name="position_embedding",
        )
        self.language_embedding = keras.layers.Embedding(
            num_languages, hidden_dim, embeddings_initializer=init, name="language_embedding"
        ) if has_languages else None
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="embeddings_layer_norm"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout)
        self.attention_bias = XLMAttentionBias(causal, mask_bias, name="attention_bias")
        self.transformer_layers = [TransformerLayer.of(config, f"transformer_layer_{i}") for i in range(num_layers)]

        # === Functional model ===
        inputs = int_inputs("token_ids", "segment_ids", "padding_mask", "lang_ids")
        token_ids, segment_ids, padding_mask, lang_ids = inputs.values()

        x = self.embeddings_dropout(self.embed(token_ids, lang_ids, segment_ids))
        keep = ops.expand_dims(ops.cast(padding_mask, "float32"), -1)  # expand_dims: TFLite builtin
        x = x * keep
        bias = self.attention_bias(padding_mask)
        for layer in self.transformer_layers:
            x = layer(x, bias) * keep
        super().__init__(inputs=inputs, outputs={"sequence_output": x}, **kwargs)

        # === Config ===
        self.remember(config)

    optional_inputs = {"segment_ids": -1, "lang_ids": -1}  # Transformers' None: no token type, no language

    @classmethod
    def input_ranges(cls, config) -> dict:
        """Token types index the *token* table; -1 stands for "not given" (token types, languages);
        language ids are only checked where there is a language table (Transformers ignores them else)."""
        config = cls.resolved(config)
        ranges = {"token_ids": (0, config["vocabulary_size"]), "segment_ids": (-1, config["vocabulary_size"]),
                  "padding_mask": (0, 2), "lang_ids": None}
        if config["num_languages"] > 1 and config["use_lang_emb"]:
            ranges["lang_ids"] = (-1, config["num_languages"])
        return ranges

    def embed(self, token_ids, lang_ids, segment_ids=None, start_index=0):
        """Embeddings of the positions start_index.. (LayerNorm applied, no dropout): token +
        position + language (with a language table) + token type (the *token* table), the last
        two left out where their ids are negative ("not given")."""
        tokens = self.token_embedding(token_ids)
        x = tokens + self.position_embedding(tokens, start_index=start_index)
        if self.language_embedding is not None:
            x = x + _optional_embedding(self.language_embedding, lang_ids)
        if segment_ids is not None:
            x = x + _optional_embedding(self.token_embedding, segment_ids)
        return self.embeddings_layer_norm(x)


@keras.saving.register_keras_serializable(package="kzoo")
class XLMMaskedLM(TaskModel):
    """LM head: logits [B, S, V] = sequence_output · token_embeddingᵀ + bias.

    Transformers' `XLMWithLMHeadModel` (`pred_layer.proj`, tied to the token embedding);
    used for fill-mask and, with causal attention, for generation (kzoo.pipelines.generation runs
    the search loops on `call_with_cache` and `generation_logits`)."""

    def __init__(self, backbone, **kwargs):
        inputs = backbone.input
        x = backbone(inputs)["sequence_output"]
        logits = Bias(name="lm_bias")(backbone.token_embedding(x, reverse=True))
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone)

    def lm_logits(self, hidden):
        """The LM head on hidden states [..., H] -> logits [..., V]."""
        return self.get_layer("lm_bias")(self.backbone.token_embedding(hidden, reverse=True))

    def new_cache(self, batch_size, max_length):
        """An empty key/value cache: one [B, 2, heads, max_length, head_dim] tensor per layer."""
        layer = self.backbone.transformer_layers[0]
        shape = (batch_size, 2, layer.num_heads, max_length, layer.head_dim)
        return tuple(ops.zeros(shape, "float32") for _ in self.backbone.transformer_layers)

    def call_with_cache(self, token_ids, cache, cache_update_index, lang_id):
        """token_ids [B, n] at positions cache_update_index.. through the layers with causal attention,
        their keys and values written into `cache` (see `new_cache`); `lang_id` is every position's
        language (-1: none). Returns (hidden states [B, n, H], cache): keras-hub's `call_with_cache`,
        but hidden states instead of logits, as generation needs the logits at one position only."""
        b = self.backbone
        queries = cache_update_index + ops.arange(ops.shape(token_ids)[1], dtype="int32")
        keys = ops.arange(ops.shape(cache[0])[3], dtype="int32")
        visible = ops.cast(ops.less_equal(keys[None, :], queries[:, None]), "float32")
        bias = (1.0 - visible)[None, None] * b.mask_bias  # [1, 1, queries, keys]
        x = b.embed(token_ids, ops.full_like(token_ids, lang_id), start_index=cache_update_index)
        new_cache = []
        for layer, layer_cache in zip(b.transformer_layers, cache):
            x, layer_cache = layer(x, bias, cache=layer_cache, cache_index=cache_update_index)
            new_cache.append(layer_cache)
        return x, tuple(new_cache)

    def generation_logits(self, buffer, index, lang_id, causal):
        """Logits [B, V] at `index` for buffer[:, :index] followed by the generation mask token, the
        whole buffer run as Transformers' `generate` runs `[*ids, mask]` (no cache): XLM's `get_masks`
        with its `lengths` (a text holding n <pad> tokens has its *last* n positions as padding), the
        causal triangle alone when `causal`, no token types, `lang_id` at every position."""
        b = self.backbone
        positions = ops.expand_dims(ops.arange(ops.shape(buffer)[1], dtype="int32"), 0)
        tokens = ops.where(ops.equal(positions, index), b.generation_mask_token_id, buffer)
        seen = ops.less_equal(positions, index)
        n_pad = ops.sum(ops.cast(ops.logical_and(ops.equal(tokens, b.pad_token_id), seen), "int32"),
                        axis=1, keepdims=True)
        padding_mask = ops.cast(ops.less(positions, index + 1 - n_pad), "int32")  # Transformers' `lengths`
        keep = ops.expand_dims(ops.cast(padding_mask, "float32"), -1)
        if causal:  # the triangle alone (keys after index are hidden by it), as XLMAttentionBias
            bias = attention_bias(ops.ones_like(padding_mask[:1]), b.mask_bias, causal=True)
        else:
            bias = attention_bias(padding_mask, b.mask_bias)
        x = b.embed(tokens, ops.full_like(tokens, lang_id)) * keep
        for layer in b.transformer_layers:
            x = layer(x, bias) * keep
        return self.lm_logits(ops.take(x, index, axis=1))


SUMMARY_DEFAULTS = dict(summary_type="first", summary_use_proj=True, summary_proj_to_labels=True,
                        summary_activation=None, summary_first_dropout=0.1, summary_last_dropout=0.0)


def _sequence_summary(backbone, x, num_classes, summary_type="first", summary_use_proj=True,
                      summary_proj_to_labels=True, summary_activation=None, summary_first_dropout=0.1,
                      summary_last_dropout=0.0):
    """Transformers' XLMSequenceSummary on sequence_output [B, S, H] -> [B, num_classes or H]."""
    if summary_type == "first":
        x = x[:, 0, :]
    elif summary_type in ("last", "cls_index"):  # (cls_index without indices: the last position)
        x = x[:, -1, :]
    elif summary_type == "mean":  # over every position, padding (zeroed) included, as Transformers
        x = ops.mean(x, axis=1)
    else:
        raise ValueError(f"summary_type {summary_type!r} is not supported (first, last, mean, cls_index)")
    x = keras.layers.Dropout(summary_first_dropout)(x)
    if summary_use_proj:
        units = num_classes if summary_proj_to_labels and num_classes > 0 else backbone.hidden_dim
        x = dense(units, "sequence_summary", backbone.initializer_range)(x)
    if summary_activation:
        x = get_activation(summary_activation)(x)
    return keras.layers.Dropout(summary_last_dropout)(x)


@keras.saving.register_keras_serializable(package="kzoo")
class XLMClassifier(TaskModel):
    """Sequence classification (Transformers' XLMForSequenceClassification): the sequence summary,
    logits [B, num_classes]."""

    def __init__(self, backbone, num_classes=2, **kwargs):
        summary = {k: kwargs.pop(k, v) for k, v in SUMMARY_DEFAULTS.items()}
        inputs = backbone.input
        logits = _sequence_summary(backbone, backbone(inputs)["sequence_output"], num_classes, **summary)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone, num_classes=num_classes, **summary)


@keras.saving.register_keras_serializable(package="kzoo")
class XLMMultipleChoice(TaskModel):
    """Multiple choice (Transformers' XLMForMultipleChoice): inputs [B, C, S], each choice a row; the
    sequence summary -> dense ("logits_proj", 1); logits [B, C]."""

    def __init__(self, backbone, num_classes=2, **kwargs):
        summary = {k: kwargs.pop(k, v) for k, v in SUMMARY_DEFAULTS.items()}
        inputs = choice_inputs(backbone)
        rows = {name: Choices(name=f"{name}_rows")(x) for name, x in inputs.items()}
        x = _sequence_summary(backbone, backbone(rows)["sequence_output"], num_classes, **summary)
        scores = dense(1, "logits_proj", backbone.initializer_range)(x)
        logits = Choices(flatten=False, name="choice_logits")(scores, like=inputs["token_ids"])
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone, num_classes=num_classes, **summary)
