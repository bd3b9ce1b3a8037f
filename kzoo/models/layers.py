"""Building blocks shared by every kzoo architecture.

ALBERT, XLM-RoBERTa and XLM all use the same post-LayerNorm transformer block
(attention -> add & norm -> feed-forward -> add & norm), so it is written once here.
We write our own attention instead of keras-hub's `TransformerEncoder` because the
additive mask must be built once per batch (and clipped for int8 TFLite) and XLM's
generation needs a key/value cache; everything else reuses Keras/keras-hub layers.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kzoo.io.keras_internals import first_call_outputs

# Additive attention bias for masked keys, the backbones' `mask_bias` default. Large enough that
# exp() underflows to exactly 0 in fp32 (as Transformers' finfo.min does), small enough to stay
# finite in fp16. Full-integer TFLite exports build with -100 instead: -6e4 would stretch the
# quantized range of the attention scores until the real scores round to a few levels.
MASK_BIAS = -6e4  # fits fp16 (max 65504)

ACTIVATIONS = {
    # Transformers' names -> Keras functions computing exactly the same function.
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),  # erf form
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),  # tanh form
    "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "relu": keras.activations.relu,
    "tanh": keras.activations.tanh,
    "sigmoid": keras.activations.sigmoid,
}


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; kzoo supports {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def attention_bias(padding_mask, mask_bias=MASK_BIAS, dtype="float32", causal=False):
    """[B, S] 0/1 mask -> additive bias [B, 1, 1 or S, S]: 0 where a key is visible, else `mask_bias`."""
    # expand_dims, not `[:, None]`: new-axis slicing of a dynamic shape becomes a Flex
    # StridedSlice in TFLite, expand_dims a builtin.
    visible = ops.expand_dims(ops.expand_dims(ops.cast(padding_mask, dtype), 1), 1)
    if causal:
        length = ops.shape(padding_mask)[1]
        idx = ops.arange(length)
        lower = ops.cast(ops.expand_dims(idx, 1) >= ops.expand_dims(idx, 0), dtype)  # key j <= query i
        visible = visible * ops.expand_dims(ops.expand_dims(lower, 0), 0)
    return (1.0 - visible) * mask_bias


def int_inputs(*names) -> dict:
    """The backbone's inputs: int32 [batch, length] each, by name (keras-hub's names)."""
    return {name: keras.Input((None,), dtype="int32", name=name) for name in names}


def dense(units, name, initializer_range=0.02, activation=None):
    """A Dense initialised as Transformers' `_init_weights` initialises nn.Linear: kernel ~ N(0, range),
    bias 0 (what a new head on a pretrained checkpoint starts from)."""
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
        name=name,
    )


class TransformerLayer(keras.layers.Layer):
    """Post-LN transformer block, the one BERT-style encoders use.

    x = LN(x + Wo · MHA(x));  x = LN(x + W2 · act(W1 · x))

    Variables (names the converters' weight tables refer to):
      query, key, value, attention_output, attention_layer_norm,
      intermediate, output, output_layer_norm
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        intermediate_dim,
        activation="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        attention_chunk_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not a multiple of num_heads {num_heads}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.intermediate_dim = intermediate_dim
        self.activation_name = activation
        self.dropout_rate = dropout
        self.attention_dropout_rate = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.attention_chunk_size = attention_chunk_size

        self.act = get_activation(activation)
        self.query = dense(hidden_dim, "query", initializer_range)
        self.key = dense(hidden_dim, "key", initializer_range)
        self.value = dense(hidden_dim, "value", initializer_range)
        self.attention_output = dense(hidden_dim, "attention_output", initializer_range)
        self.attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="attention_layer_norm"
        )
        self.intermediate = dense(intermediate_dim, "intermediate", initializer_range)
        self.output_dense = dense(hidden_dim, "output", initializer_range)
        self.output_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="output_layer_norm"
        )
        self.attention_dropout = keras.layers.Dropout(attention_dropout)
        self.dropout = keras.layers.Dropout(dropout)

    @classmethod
    def of(cls, config, name):
        """A block with a backbone config's sizes and options (hidden_dim, num_heads, ...)."""
        keys = ("activation", "dropout", "attention_dropout", "layer_norm_epsilon", "initializer_range",
                "attention_chunk_size")
        return cls(config["hidden_dim"], config["num_heads"], config["intermediate_dim"],
                   **{k: config.get(k) for k in keys}, name=name)

    def build(self, input_shape):
        hidden = (None, None, self.hidden_dim)
        for layer in (self.query, self.key, self.value, self.attention_output, self.intermediate):
            layer.build(hidden)
        self.output_dense.build((None, None, self.intermediate_dim))
        self.attention_layer_norm.build(hidden)
        self.output_layer_norm.build(hidden)
        self.built = True

    def _heads(self, x, b, s):
        # [B*S, H] -> [B, heads, S, head_dim]
        return ops.transpose(ops.reshape(x, (b, s, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def call(self, x, bias, training=False, cache=None, cache_index=None):
        """x [B, S, H], bias [B or 1, 1, 1 or S, keys] -> [B, S, H].

        With `cache` ([B, 2, heads, max_length, head_dim]: keys and values by position), one
        decoding step: x holds the positions cache_index .. cache_index + S - 1, whose keys
        and values are written into the cache; the queries attend over all max_length cached
        positions (`bias` must hide those not written yet); returns (output, updated cache).
        """
        b, s = ops.shape(x)[0], ops.shape(x)[1]
        # The block works on [B*S, H]: every Dense is then a plain 2-D matmul. On [B, S, H] each one
        # is a tensordot whose dynamic-shape bookkeeping (shape, gather, prod, pack: ~50 ops a
        # block) runs at every call in TFLite and TF graphs; XLA compiles either form the same.
        x = ops.reshape(x, (-1, self.hidden_dim))
        q = self._heads(self.query(x) * (1.0 / math.sqrt(self.head_dim)), b, s)
        k = self._heads(self.key(x), b, s)
        v = self._heads(self.value(x), b, s)
        if cache is not None:
            cache = ops.slice_update(cache, [0, 0, 0, cache_index, 0], ops.stack([k, v], axis=1))
            k, v = cache[:, 0], cache[:, 1]
        if self.attention_chunk_size and cache is None:
            context = self._attend_in_chunks(q, k, v, bias, training)
        else:
            context = self._attend(q, k, v, bias, training)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (-1, self.hidden_dim))
        attended = self.dropout(self.attention_output(context), training=training)
        x = self.attention_layer_norm(x + attended)
        ffn = self.output_dense(self.act(self.intermediate(x)))
        ffn = self.dropout(ffn, training=training)
        x = ops.reshape(self.output_layer_norm(x + ffn), (b, s, self.hidden_dim))
        return x if cache is None else (x, cache)

    def _attend(self, q, k, v, bias, training):
        """softmax(q kᵀ + bias) v: [B, heads, queries, head_dim]."""
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) + bias
        # (softmax in float32 under a mixed-precision policy: a no-op cast in a float32 model)
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), v.dtype)
        probs = self.attention_dropout(probs, training=training)
        # A query that sees no key at all (a row whose padding_mask is all 0) attends to nothing: its
        # context is 0, as PyTorch's scaled_dot_product_attention gives Transformers' models for a
        # fully masked row. Elsewhere the context is multiplied by 1, bit for bit the same.
        sees = ops.cast(ops.max(bias, axis=-1, keepdims=True) == 0, probs.dtype)  # [B or 1, 1, 1 or S, 1]
        return ops.matmul(probs, v) * sees

    def _attend_in_chunks(self, q, k, v, bias, training):
        """`_attend` on blocks of `attention_chunk_size` queries in turn, so that one block's scores live at a
        time ([B, heads, chunk, S], not [B, heads, S, S]: at 8,192 tokens and 16 heads, 0.5 GB instead of
        4.3); each query's row is computed as in `_attend`. A loop (ops.map): the length is dynamic."""
        c = self.attention_chunk_size
        s = ops.shape(q)[2]
        n = (s + c - 1) // c

        def blocks(x):  # [B, X, S, Y] -> [n, B, X, c, Y] (queries padded to n * c)
            x = ops.pad(x, [[0, 0], [0, 0], [0, n * c - s], [0, 0]])
            shape = ops.shape(x)
            return ops.transpose(ops.reshape(x, (shape[0], shape[1], n, c, shape[3])), (2, 0, 1, 3, 4))

        if bias.shape[2] == 1:  # the same bias for every query (padding only)
            out = ops.map(lambda qc: self._attend(qc, k, v, bias, training), blocks(q))
        else:  # a bias per query (causal): its blocks too
            out = ops.map(lambda x: self._attend(x[0], k, v, x[1], training), (blocks(q), blocks(bias)))
        shape = ops.shape(out)  # [n, B, heads, c, head_dim]
        out = ops.reshape(ops.transpose(out, (1, 2, 0, 3, 4)), (shape[1], shape[2], n * c, shape[4]))
        return out[:, :, :s]

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "activation": self.activation_name,
            "dropout": self.dropout_rate,
            "attention_dropout": self.attention_dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
            "attention_chunk_size": self.attention_chunk_size,
        }


def masked_lm_logits(backbone, sequence_output, width, activation):
    """The BERT-style masked-LM head: dense(H -> width) -> activation -> LayerNorm -> the decoder tied
    to the token embedding + its own bias. Layer names the weight tables use: mlm_dense,
    mlm_layer_norm, mlm_bias."""
    x = dense(width, "mlm_dense", backbone.initializer_range)(sequence_output)
    x = get_activation(activation)(x)
    x = keras.layers.LayerNormalization(epsilon=backbone.layer_norm_epsilon, name="mlm_layer_norm")(x)
    return Bias(name="mlm_bias")(backbone.token_embedding(x, reverse=True))


class Bias(keras.layers.Layer):
    """A learned bias over the last axis (the MLM head's output bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")
        self.built = True

    def call(self, x):
        return x + self.bias


class Configured(keras.Model):
    """A functional model whose constructor arguments are attributes, saved by `get_config`."""

    config_keys = ()

    def remember(self, config):
        for key, value in config.items():
            setattr(self, key, value)
        self.config_keys = tuple(config)


class Backbone(Configured):
    """A backbone: `config = Backbone.arguments(locals())` first thing in `__init__`,
    `self.remember(config)` last; `get_config` returns them (Keras round-trips it).

    Each family's `__init__` is one function in keras-hub's sections (layers, functional model,
    config), longer than kzoo's usual 60 lines, so that the architecture reads top to bottom; its
    length is the argument list and the layers."""

    has_pooler = True  # takes `use_pooler` (Transformers' add_pooling_layer); XLM has none

    @staticmethod
    def arguments(local_variables) -> dict:
        return {k: v for k, v in local_variables.items() if k not in ("self", "kwargs", "__class__")}

    @classmethod
    def resolved(cls, config) -> dict:
        """A stored config with the constructor's defaults filled in."""
        import inspect

        defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        return {**defaults, **config}

    # Inputs a caller may leave out, with the value meaning "not given" (Transformers' default there).
    optional_inputs = {"segment_ids": 0}

    @classmethod
    def input_ranges(cls, config) -> dict:
        """{input name: (lowest, highest + 1)} of the values the model takes (the family's backbone
        says; None: any). kzoo.runtime and the SavedModel signatures refuse anything else."""
        config = cls.resolved(config)
        return {"token_ids": (0, config["vocabulary_size"]), "segment_ids": (0, config["num_segments"]),
                "padding_mask": (0, 2)}

    @classmethod
    def max_tokens(cls, config) -> int:
        """The longest input its position table takes."""
        return int(cls.resolved(config)["max_sequence_length"])

    def get_config(self):
        return {"name": self.name, **{k: getattr(self, k) for k in self.config_keys}}


class TaskModel(Configured):
    """A head on a backbone, taking the backbone's inputs; `get_config` round-trips.

    uses_pooler: whether the backbone is built with its pooler for this head (Transformers'
    `add_pooling_layer`); None for a backbone that has none (XLM). A subclass's `__init__` ends with
    `keep(backbone, **its own arguments)`: `get_config` saves them.
    """

    uses_pooler = None

    def keep(self, backbone, **config):
        self.backbone = backbone
        self.remember(config)

    def get_config(self):
        return {"name": self.name, "backbone": keras.saving.serialize_keras_object(self.backbone),
                **{k: getattr(self, k) for k in self.config_keys}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


# Heads that every family shares: Transformers' per-family classes compute the same function on the
# sequence output (each family's model file imports them, and kzoo.families names them).


@keras.saving.register_keras_serializable(package="kzoo")
class TokenClassifier(TaskModel):
    """Token classification (Transformers' *ForTokenClassification): dropout -> dense ("classifier")
    at every position, logits [B, S, num_classes]."""

    uses_pooler = False

    def __init__(self, backbone, num_classes=2, classifier_dropout=0.1, **kwargs):
        inputs = backbone.input
        x = keras.layers.Dropout(classifier_dropout)(backbone(inputs)["sequence_output"])
        logits = dense(num_classes, "classifier", backbone.initializer_range)(x)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone, num_classes=num_classes, classifier_dropout=classifier_dropout)


@keras.saving.register_keras_serializable(package="kzoo")
class QuestionAnswering(TaskModel):
    """Extractive QA (Transformers' *ForQuestionAnswering, XLMForQuestionAnsweringSimple): dense
    ("qa_outputs", 2) at every position, {"start_logits": [B, S], "end_logits": [B, S]}."""

    uses_pooler = False

    def __init__(self, backbone, **kwargs):
        inputs = backbone.input
        logits = dense(2, "qa_outputs", backbone.initializer_range)(backbone(inputs)["sequence_output"])
        super().__init__(inputs=inputs, outputs={"start_logits": logits[..., 0], "end_logits": logits[..., 1]},
                         **kwargs)
        self.keep(backbone)


@keras.saving.register_keras_serializable(package="kzoo")
class Choices(keras.layers.Layer):
    """[B, C, S] -> [B * C, S] (`flatten`), or per-row scores [B * C, 1] -> [B, C] shaped like the
    choices (`unflatten`): a layer, as the functional model's shapes are unknown until called."""

    def __init__(self, flatten=True, **kwargs):
        super().__init__(**kwargs)
        self.flatten = flatten

    def call(self, x, like=None):
        if self.flatten:
            return ops.reshape(x, (-1, ops.shape(x)[-1]))
        return ops.reshape(x, (ops.shape(like)[0], ops.shape(like)[1]))

    def compute_output_shape(self, x_shape, like_shape=None):
        return (None, x_shape[-1]) if self.flatten else (like_shape[0], like_shape[1])

    def get_config(self):
        return {**super().get_config(), "flatten": self.flatten}


def choice_inputs(backbone) -> dict:
    """The backbone's inputs with a choices axis: int32 [batch, choices, length] each."""
    return {name: keras.Input((None, None), dtype="int32", name=name) for name in backbone.input}


@keras.saving.register_keras_serializable(package="kzoo")
class MultipleChoice(TaskModel):
    """Multiple choice (Transformers' AlbertForMultipleChoice, XLMRobertaForMultipleChoice): inputs
    [B, C, S], each choice a row of the backbone; dropout -> dense ("classifier", 1) on its pooled
    output; logits [B, C]."""

    uses_pooler = True

    def __init__(self, backbone, classifier_dropout=0.1, **kwargs):
        inputs = choice_inputs(backbone)
        rows = {name: Choices(name=f"{name}_rows")(x) for name, x in inputs.items()}
        pooled = keras.layers.Dropout(classifier_dropout)(backbone(rows)["pooled_output"])
        scores = dense(1, "classifier", backbone.initializer_range)(pooled)
        logits = Choices(flatten=False, name="choice_logits")(scores, like=inputs["token_ids"])
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.keep(backbone, classifier_dropout=classifier_dropout)


POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


@keras.saving.register_keras_serializable(package="kzoo")
class Pooling(keras.layers.Layer):
    """sentence-transformers' Pooling: token vectors [B, S, H] and padding_mask [B, S] -> [B, H * modes], the
    modes' vectors concatenated: cls (the first token), max, mean, mean_sqrt_len_tokens (sum / sqrt(count)),
    weightedmean (position i weighted i + 1), lasttoken (the last token); over the tokens only."""

    def __init__(self, modes=("mean",), **kwargs):
        super().__init__(**kwargs)
        unknown = [m for m in modes if m not in POOLING_MODES]
        if unknown or not modes:
            raise ValueError(f"pooling modes {list(modes)}: expected some of {', '.join(POOLING_MODES)}")
        self.modes = list(modes)

    def call(self, x, padding_mask):
        mask = ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)  # [B, S, 1]
        count = ops.maximum(ops.sum(mask, axis=1), 1e-9)
        first = ops.argmax(ops.cast(padding_mask, "int32"), axis=1)
        last = ops.shape(x)[1] - 1 - ops.argmax(ops.flip(ops.cast(padding_mask, "int32"), axis=1), axis=1)
        vectors = []
        for mode in self.modes:
            if mode == "cls":
                vectors.append(ops.take_along_axis(x, first[:, None, None], axis=1)[:, 0])
            elif mode == "lasttoken":
                vectors.append(ops.take_along_axis(x * mask, last[:, None, None], axis=1)[:, 0])
            elif mode == "max":
                vectors.append(ops.max(ops.where(mask > 0, x, -float("inf")), axis=1))
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                total = ops.sum(x * mask, axis=1)
                vectors.append(total / (count if mode == "mean" else ops.sqrt(count)))
            else:  # weightedmean: weights 1, 2, .. from the first token
                positions = ops.arange(1, ops.shape(x)[1] + 1, dtype=x.dtype)[None, :, None]
                weights = mask * (positions - ops.cast(first, x.dtype)[:, None, None])
                vectors.append(ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1e-9))
        return vectors[0] if len(vectors) == 1 else ops.concatenate(vectors, axis=-1)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return (x_shape[0], x_shape[-1] * len(self.modes))

    def get_config(self):
        return {**super().get_config(), "modes": self.modes}


@keras.saving.register_keras_serializable(package="kzoo")
class SentenceEmbedding(TaskModel):
    """A sentence-transformers model: the encoder's token vectors -> Pooling -> Dense layers (`dense`: a list
    of {"units", "bias", "activation"}) -> L2 normalisation when `normalize`; sentence_embedding [B, D]."""

    uses_pooler = False

    def __init__(self, backbone, pooling=("mean",), dense=(), normalize=False, **kwargs):
        inputs = backbone.input
        x = Pooling(pooling, name="pooling")(backbone(inputs)["sequence_output"], padding_mask=inputs["padding_mask"])
        for i, layer in enumerate(dense):
            x = keras.layers.Dense(layer["units"], use_bias=layer.get("bias", True), name=f"dense_{i}",
                                   activation=get_activation(layer["activation"]) if layer.get("activation") else None)(x)
        if normalize:  # (torch's F.normalize: x / max(|x|, 1e-12))
            x = x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), 1e-12)
        super().__init__(inputs=inputs, outputs={"sentence_embedding": x}, **kwargs)
        self.keep(backbone, pooling=list(pooling), dense=[dict(d) for d in dense], normalize=normalize)


def per_position_head(model):
    """The per-position outputs of a task model (rank 3: [B, S, ...]) as a Keras model taking the
    backbone's sequence_output (the same layers and weights), so that a head runs at a few positions
    only: at sequence 128 XLM-R's 250k-wide decoder costs twice the backbone at every position, and
    its logits take 1 GB for 8 texts. The head returns a dict ({"logits": ...} for a single output);
    None when the model has no per-position output."""
    (sequence,) = [t for t in first_call_outputs(model.backbone) if len(t.shape) == 3]  # (pooled: 2-D)
    outputs = model.output if isinstance(model.output, dict) else {"logits": model.output}
    per_position = {name: t for name, t in outputs.items() if len(t.shape) == 3}
    if not per_position:
        return None
    return keras.Model(sequence, per_position)
