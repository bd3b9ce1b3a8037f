"""ALBERT (Lan et al., 2019) as Keras 3 functional models.

Reads top to bottom like Transformers' `modeling_albert.py`:
  embeddings (token + position + segment, width `embedding_dim`) -> LayerNorm
  -> projection to `hidden_dim` -> `num_layers` passes through shared layer groups
  -> pooler (tanh dense on the first token).
Heads: masked LM (dense -> act -> LayerNorm -> decoder tied to the token embedding
+ bias), sentence-order prediction, sequence classification.

Parameter sharing: `num_groups` groups of `num_inner_repetitions` layers each; pass
i runs group int(i / (num_layers / num_groups)), every layer of it in order. With
one group all passes reuse the same weights, so the model stays small.
"""

from __future__ import annotations

import keras
import keras_hub

from kzoo.models.layers import (
    MASK_BIAS, Backbone, TaskModel, TransformerLayer, attention_bias, dense, int_inputs, masked_lm_logits,
)
from kzoo.models.layers import MultipleChoice, QuestionAnswering, SentenceEmbedding, TokenClassifier  # noqa: F401  (heads every family shares)


@keras.saving.register_keras_serializable(package="kzoo")
class AlbertBackbone(Backbone):
    """ALBERT encoder. Inputs `token_ids`, `segment_ids`, `padding_mask` ([B, S] int32).

    Returns {"sequence_output": [B, S, H], "pooled_output": [B, H]} (no pooled output
    when `use_pooler=False`, as in Transformers' masked-LM model).
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        embedding_dim=128,
        num_groups=1,
        num_inner_repetitions=1,
        activation="gelu_new",
        dropout=0.0,
        attention_dropout=0.0,
        max_sequence_length=512,
        num_segments=2,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        use_pooler=True,
        mask_bias=MASK_BIAS,
        attention_chunk_size=None,
        **kwargs,
    ):
        config = Backbone.arguments(locals())
        if num_layers % num_groups:
            raise ValueError(f"num_layers ({num_layers}) must be a multiple of num_groups ({num_groups})")
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)

        # === Layers ===
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size, embedding_dim, tie_weights=True, embeddings_initializer=init,
            name="token_embedding",
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            max_sequence_length, initializer=init, name="position_embedding"
        )
        self.segment_embedding = keras.layers.Embedding(
            num_segments, embedding_dim, embeddings_initializer=init, name="segment_embedding"
        )
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="embeddings_layer_norm"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout)
        self.embedding_projection = dense(hidden_dim, "embedding_projection", initializer_range)
        self.groups = [[TransformerLayer.of(config, f"group_{g}_inner_{i}") for i in range(num_inner_repetitions)]
                       for g in range(num_groups)]
        self.pooler = dense(hidden_dim, "pooler", initializer_range, activation="tanh") if use_pooler else None

        # === Functional model ===
        inputs = int_inputs("token_ids", "segment_ids", "padding_mask")
        token_ids, segment_ids, padding_mask = inputs.values()

        tokens = self.token_embedding(token_ids)
        x = tokens + self.segment_embedding(segment_ids) + self.position_embedding(tokens)
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        x = self.embedding_projection(x)
        bias = attention_bias(padding_mask, mask_bias)
        layers_per_group = num_layers // num_groups
        for i in range(num_layers):
            for layer in self.groups[i // layers_per_group]:
                x = layer(x, bias)
        outputs = {"sequence_output": x}
        if use_pooler:
            outputs["pooled_output"] = self.pooler(x[:, 0, :])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.remember(config)


def _pooled_logits(backbone, pooled, units, dropout, name):
    """dropout -> dense on the pooled output (the sentence-order and the classification heads)."""
    return dense(units, name, backbone.initializer_range)(keras.layers.Dropout(dropout)(pooled))


def _mlm_logits(backbone, sequence_output):
    """Transformers' AlbertMLMHead: dense(H -> E) -> the model's activation -> LayerNorm(E) -> decoder."""
    return masked_lm_logits(backbone, sequence_output, backbone.embedding_dim, backbone.activation)


@keras.saving.register_keras_serializable(package="kzoo")
class AlbertMaskedLM(TaskModel):
    """Masked LM: logits [B, S, V]. Transformers' `AlbertForMaskedLM` (no pooler)."""

    uses_pooler = False

    def __init__(self, backbone, **kwargs):
        inputs = backbone.input
        logits = _mlm_logits(backbone, backbone(inputs)["sequence_output"])
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone)


@keras.saving.register_keras_serializable(package="kzoo")
class AlbertPreTraining(TaskModel):
    """Both pretraining heads: {"mlm_logits": [B, S, V], "sop_logits": [B, 2]}."""

    uses_pooler = True

    def __init__(self, backbone, num_sop_labels=2, classifier_dropout=0.1, **kwargs):
        inputs = backbone.input
        outputs = backbone(inputs)
        sop = _pooled_logits(backbone, outputs["pooled_output"], num_sop_labels, classifier_dropout, "sop_classifier")
        mlm = _mlm_logits(backbone, outputs["sequence_output"])
        super().__init__(inputs=inputs, outputs={"mlm_logits": mlm, "sop_logits": sop}, **kwargs)
        self.keep(backbone, num_sop_labels=num_sop_labels, classifier_dropout=classifier_dropout)


@keras.saving.register_keras_serializable(package="kzoo")
class AlbertClassifier(TaskModel):
    """Sequence classification on the pooled output: logits [B, num_classes]."""

    uses_pooler = True

    def __init__(self, backbone, num_classes=2, classifier_dropout=0.1, **kwargs):
        inputs = backbone.input
        logits = _pooled_logits(backbone, backbone(inputs)["pooled_output"], num_classes, classifier_dropout,
                                "classifier")
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone, num_classes=num_classes, classifier_dropout=classifier_dropout)
