"""XLM-RoBERTa (Conneau et al., 2019) as Keras 3 functional models.

Reads top to bottom like Transformers' `modeling_xlm_roberta.py`:
  embeddings (token + position + segment) -> LayerNorm -> `num_layers` post-LN blocks
  (exact GELU) -> optional pooler (tanh dense on `<s>`).
Heads: masked LM (dense -> GELU -> LayerNorm -> decoder tied to the token embedding
+ bias) and sequence classification (dense -> tanh -> out_proj on `<s>`).

Positions are RoBERTa's: they count from `pad_token_id + 1` over non-pad tokens
(`cumsum(ids != pad) * (ids != pad) + pad`), so a left-padded row gets the same
positions as the unpadded one and `max_sequence_length` (514) allows 512 tokens.
"""

from __future__ import annotations

import keras
from keras import ops

from kzoo.models.layers import (
    MASK_BIAS, Backbone, TaskModel, TransformerLayer, attention_bias, dense, int_inputs, masked_lm_logits,
)
from kzoo.models.layers import MultipleChoice, QuestionAnswering, SentenceEmbedding, TokenClassifier  # noqa: F401  (heads every family shares)


@keras.saving.register_keras_serializable(package="kzoo")
class XLMRobertaBackbone(Backbone):
    """XLM-RoBERTa encoder. Inputs `token_ids`, `segment_ids`, `padding_mask` ([B, S] int32).

    Returns {"sequence_output": [B, S, H]} plus "pooled_output" [B, H] with `use_pooler`.
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        activation="gelu",
        dropout=0.1,
        attention_dropout=0.1,
        max_sequence_length=514,
        num_segments=1,
        pad_token_id=1,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        use_pooler=True,
        mask_bias=MASK_BIAS,
        attention_chunk_size=None,
        **kwargs,
    ):
        config = Backbone.arguments(locals())
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)

        # === Layers ===
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=True, embeddings_initializer=init, name="token_embedding"
        )
        self.position_embedding = keras.layers.Embedding(
            max_sequence_length, hidden_dim, embeddings_initializer=init, name="position_embedding"
        )
        self.segment_embedding = keras.layers.Embedding(
            num_segments, hidden_dim, embeddings_initializer=init, name="segment_embedding"
        )
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="embeddings_layer_norm"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout)
        self.transformer_layers = [TransformerLayer.of(config, f"transformer_layer_{i}") for i in range(num_layers)]
        self.pooler = dense(hidden_dim, "pooler", initializer_range, activation="tanh") if use_pooler else None

        # === Functional model ===
        inputs = int_inputs("token_ids", "segment_ids", "padding_mask")
        token_ids, segment_ids, padding_mask = inputs.values()

        not_pad = ops.cast(ops.not_equal(token_ids, pad_token_id), "int32")
        positions = ops.cumsum(not_pad, axis=1) * not_pad + pad_token_id
        x = (self.token_embedding(token_ids) + self.segment_embedding(segment_ids)
             + self.position_embedding(positions))
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        bias = attention_bias(padding_mask, mask_bias)
        for layer in self.transformer_layers:
            x = layer(x, bias)
        outputs = {"sequence_output": x}
        if use_pooler:
            outputs["pooled_output"] = self.pooler(x[:, 0, :])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.remember(config)

    @classmethod
    def max_tokens(cls, config) -> int:
        """RoBERTa's positions count from pad_token_id + 1: 514 positions take 512 tokens."""
        config = cls.resolved(config)
        return int(config["max_sequence_length"]) - int(config["pad_token_id"]) - 1


@keras.saving.register_keras_serializable(package="kzoo")
class XLMRobertaMaskedLM(TaskModel):
    """Masked LM: logits [B, S, V]. Transformers' `XLMRobertaForMaskedLM` (no pooler)."""

    uses_pooler = False

    def __init__(self, backbone, **kwargs):
        inputs = backbone.input
        x = backbone(inputs)["sequence_output"]
        logits = masked_lm_logits(backbone, x, backbone.hidden_dim, "gelu")  # exact GELU, whatever hidden_act says
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone)


@keras.saving.register_keras_serializable(package="kzoo")
class XLMRobertaClassifier(TaskModel):
    """Sequence classification on `<s>`: dropout -> dense -> tanh -> dropout -> out_proj."""

    uses_pooler = False

    def __init__(self, backbone, num_classes=2, classifier_dropout=0.1, **kwargs):
        inputs = backbone.input
        x = backbone(inputs)["sequence_output"][:, 0, :]
        x = keras.layers.Dropout(classifier_dropout)(x)
        x = dense(backbone.hidden_dim, "classifier_dense", backbone.initializer_range, activation="tanh")(x)
        x = keras.layers.Dropout(classifier_dropout)(x)
        logits = dense(num_classes, "classifier", backbone.initializer_range)(x)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone, num_classes=num_classes, classifier_dropout=classifier_dropout)
