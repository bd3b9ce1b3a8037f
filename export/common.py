"""What both export formats build on: the model, its signatures' inputs, the text signature the
model dir's task declares (kzoo.tasks), length buckets and the tokenizer inside the graph."""

from __future__ import annotations

import numpy as np

from kzoo.errors import KzooError
from kzoo.io import modeldir
from kzoo.io.atomic import overlaps
from kzoo.models import load_model, outputs
from kzoo.tasks import TASKS

BATCH_BUCKETS = tuple(2**i for i in range(11))  # 1, 2, 4, ..., 1024


class ExportError(KzooError):
    """A one-line, user-facing problem with an export."""


def check_out(out, overwrite, model_dir, *replaced):
    """An ExportError before any slow work when OUT exists and may not be replaced, or when OUT (or
    another path the export replaces: `replaced`) would touch the model dir (kzoo.io.atomic.overlaps)."""
    from pathlib import Path

    for path in (out, *replaced):
        if overlaps(path, model_dir):
            raise ExportError(f"{out}: that is where the model dir {model_dir} is; export to another path")
    if Path(out).exists() and not overwrite:
        raise ExportError(f"{out} already exists (pass --overwrite to replace it)")


def model_and_config(model_dir, mask_bias=None, full_attention=False):
    """(Keras model, config) of a kzoo model dir; with `mask_bias`, built with that attention-mask
    bias instead of the exact one (a backbone argument: kzoo.models.layers.MASK_BIAS); with
    `full_attention`, attention over all queries at once even where the config has it in blocks
    (`attention_chunk_size`: a loop TFLite would run as a WHILE op)."""
    config = modeldir.read_config(model_dir)
    overrides = {} if mask_bias is None else {"mask_bias": float(mask_bias)}
    if full_attention:
        overrides["attention_chunk_size"] = None
    model = load_model(model_dir, **overrides)
    return model, config


def text_options(config, **given):
    """The model dir's task's text-signature options: the declared ones (kzoo.tasks), each given value
    or its default, checked (whole numbers >= 1) before any slow work."""
    task = TASKS.get(config.get("task"))
    declared = dict(task.text_options) if task else {}
    foreign = [_flag(name) for name, value in given.items() if value is not None and name not in declared]
    if foreign:
        raise ExportError(f"{', '.join(foreign)}: not an option of a {config.get('task')} model's text signature")
    options = {name: given.get(name) if given.get(name) is not None else default
               for name, default in declared.items()}
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ExportError(f"{_flag(name)} must be a whole number >= 1, got {value!r}")
    return options


def check_text_only(has_text, why, **given):
    """An ExportError for text-signature options given to an export that will have no text signature."""
    named = [_flag(name) for name, value in given.items() if value is not None]
    if named and not has_text:
        raise ExportError(f"{', '.join(named)}: for the text signature, which this export will not have ({why})")


def _flag(name):
    return "--" + name.replace("_", "-")


def require_text_signature(config):
    """The model dir's task, or an ExportError when it has no text signature (kzoo.tasks)."""
    task = TASKS.get(config.get("task"))
    if task is None or task.text_signature is None:
        raise ExportError(f"no text signature for task {config.get('task')!r}; export ids in")
    return task


def text_signature(model, config, tokenizer, options):
    """The task's `(numeric, strings)` text functions (kzoo.tasks), or an ExportError when it has none."""
    task = require_text_signature(config)
    try:
        return task.text_signature(model, config, tokenizer, **options)
    except KzooError as e:
        raise ExportError(f"text signature: {e}") from None


def load_text_tokenizer(model_dir):
    """The model dir's tokenizer, if it can run inside a TF graph (`tf_encode`); else an ExportError."""
    from kzoo.tokenizers import load_tokenizer

    try:
        tokenizer = load_tokenizer(model_dir)
    except KzooError as e:
        raise ExportError(f"text signatures need the model dir's tokenizer: {e}") from None
    if not hasattr(tokenizer, "tf_encode"):
        why = f"its {type(tokenizer).__name__} runs in Python only (not a TF graph op)"
    else:  # (XLM's graph refuses a few settings)
        why = getattr(tokenizer, "graph_refusal", lambda: None)()
    if why:
        raise ExportError(f"{model_dir}: {why}, so it cannot go inside this export; export ids in (the default) "
                          "and tokenize with kzoo.load_tokenizer")
    return tokenizer


def input_names(model):
    """The model's declared inputs, all int32 [B, S] (multiple choice: [B, C, S]), sorted."""
    inputs = model.input
    if not isinstance(inputs, dict):
        raise ExportError(f"{model.name}: expected a model with named inputs (token_ids, padding_mask, ...)")
    return sorted(inputs)


def input_rank(model):
    """2 ([batch, length]), or 3 for a multiple-choice model ([batch, choices, length])."""
    return len(model.input[input_names(model)[0]].shape)


def input_signature(model):
    import tensorflow as tf

    # [None, None]: dynamic batch and sequence length (TFLite: shape_signature [-1, -1]); [None, None, None]
    # with a choices axis.
    return {name: tf.TensorSpec([None] * input_rank(model), tf.int32, name=name) for name in input_names(model)}


def with_choices(batch, model, choices=2):
    """An evaluation batch [B, S] as the model's inputs: [B / choices, choices, S] for a multiple-choice model."""
    if input_rank(model) == 2:
        return batch
    return {name: value.reshape(-1, choices, value.shape[-1]) for name, value in batch.items()}


def variable_holder(model):
    """A tf.Module tracking the model's variables.

    Tracking the Keras 3 variables themselves (`model.variables`) is not enough: the TFLite
    converter, which goes through a SavedModel, then kept them as resource variables without
    values (VAR_HANDLE / READ_VARIABLE ops, all-NaN outputs). Tracking the underlying tf.Variables
    (`.value`, as Keras' own ExportArchive does) saves them, and the converter freezes them.
    """
    import tensorflow as tf

    holder = tf.Module()
    holder.model_variables = [v.value for v in model.variables]
    return holder


def ids_function(model):
    """The ids signature's function: the model's inputs -> its outputs (named)."""
    return lambda inputs: outputs(model, inputs)


def max_tokens(config):
    """The longest input the model's position table takes (its backbone class says: kzoo.models)."""
    from kzoo.models import input_limits

    return input_limits(config["architecture"], config["backbone"])[1]


def length_buckets(longest, smallest=16):
    """Padded lengths a text signature uses: 16, 32, ..., up to and including `longest`."""
    buckets = []
    b = smallest
    while b < longest:
        buckets.append(b)
        b *= 2
    return buckets + [longest]


def pad_values(model):
    """What each input is padded with: the model's pad id for token_ids, 0 for the others."""
    return {"token_ids": int(getattr(getattr(model, "backbone", model), "pad_token_id", 0) or 0)}


def input_checks(inputs, config):
    """TF ops refusing inputs the model cannot take (as kzoo.runtime does in Python): shapes that differ,
    values outside their range (kzoo.models.input_limits), more tokens than the positions. A SavedModel
    runs them before its XLA part, so a server answers InvalidArgument naming the input, not clamped
    garbage."""
    import tensorflow as tf

    from kzoo.models import input_limits

    ranges, longest = input_limits(config["architecture"], config["backbone"])
    ids = inputs["token_ids"]
    checks = [tf.debugging.assert_equal(tf.shape(value), tf.shape(ids),
                                        message=f"{name} and token_ids must have the same shape [batch, length]")
              for name, value in inputs.items() if name != "token_ids"]
    for name, limits in ranges.items():
        if limits is not None and name in inputs:
            low, high = limits
            message = f"{name}: every value must be in {low}..{high - 1}"
            checks += [tf.debugging.assert_greater_equal(inputs[name], low, message=message),
                       tf.debugging.assert_less(inputs[name], high, message=message)]
    checks.append(tf.debugging.assert_less_equal(tf.shape(ids)[-1], longest,
                                                 message=f"the input is too long: the model takes at most {longest} tokens"))
    return checks


def bucketed(compiled, inputs, pad_values, lengths=None, batches=BATCH_BUCKETS):
    """`compiled(inputs)`, the inputs padded up to a batch bucket (and a length bucket when `lengths`
    is given) first, and the outputs cut back to the request's batch (and length: rank-3 outputs).

    Runs outside XLA, which compiles one program per input shape: a server then compiles a handful
    of programs instead of one per request shape. The padding is masked (padding_mask 0, <pad>
    tokens), so real positions compute what they would unpadded; sizes past the last bucket pass
    as they are.
    """
    import tensorflow as tf

    def up(table, n):
        table = tf.constant(table, tf.int32)
        return tf.reduce_min(tf.where(table >= n, table, tf.maximum(n, table[-1])))

    shape = tf.shape(inputs["token_ids"])
    size, length = shape[0], shape[-1]
    pad_rows = up(batches, size) - size
    pad_columns = up(lengths, length) - length if lengths else 0
    middle = [[0, 0]] * (inputs["token_ids"].shape.rank - 2)  # (a choices axis: as it is)
    padded = {name: tf.pad(value, [[0, pad_rows], *middle, [0, pad_columns]],
                           constant_values=pad_values.get(name, 0))
              for name, value in inputs.items()}
    out = compiled(padded)
    # Outputs with a sequence axis: [B, S, ...] of rank 3 (sequence_output, MLM and token logits) and
    # [B, S] (QA's start/end logits: the only rank-2 outputs whose second axis is not static); the
    # others are per text ([B, H], [B, C]), and all of a multiple-choice model's ([B, C]).
    def per_position(value):
        return not middle and (value.shape.rank == 3 or (value.shape.rank == 2 and value.shape[1] is None))

    return {name: value[:size, :length] if lengths and per_position(value) else value[:size]
            for name, value in out.items()}


def text_max_length(max_length, longest, config=None):
    """A text signature's longest input in tokens (special tokens included): `max_length`, checked, or
    the model's longest (a sentence-transformers model's max_seq_length, where it cuts every text). Longer
    texts are cut; the signature says which (its `truncated` output)."""
    if max_length is None:
        return min(longest, (config or {}).get("max_seq_length") or longest)
    task = TASKS.get((config or {}).get("task"))
    low = 6 if task is not None and len(task.text_inputs) > 1 else 3  # the special tokens and one of each text
    whole = isinstance(max_length, (int, np.integer)) and not isinstance(max_length, bool)
    if not whole or not low <= max_length <= longest:
        raise ExportError(f"--max-length must be a whole number in {low}..{longest} (the model's longest input), "
                          f"got {max_length!r}")
    return int(max_length)


def encode_in_graph(tokenizer, model, texts, longest, buckets=None, offsets=False):
    """The text signature's strings (a tuple of [B] tensors: one text, or a pair) -> (the model's inputs
    [B, L], the tokenizer's offsets, truncated [B]) inside the graph.

    `tf_encode` pads (and cuts) to `longest`; the batch is then cut to its longest row, rounded up to a
    bucket when `buckets` is given (XLA compiles one program per shape, so a server sees a handful of
    lengths instead of one per request). Inputs the tokenizer does not make (XLM's `lang_ids`) are 0.
    offsets: with `offsets`, the tokenizer's offset_mapping, word_offsets [B, L, 2] and sequence_ids
    [B, L] (else {}). truncated: 1 where a text had more tokens than `longest` takes.
    """
    import tensorflow as tf

    batch = tokenizer.tf_encode(texts[0], longest, pairs=texts[1] if len(texts) > 1 else None, offsets=offsets)
    truncated = batch.pop("truncated")
    extra = {name: batch.pop(name) for name in ("offset_mapping", "word_offsets", "sequence_ids") if name in batch}
    needed = tf.reduce_max(tf.reduce_sum(batch["padding_mask"], axis=1))
    if buckets:
        table = tf.constant(buckets, tf.int32)
        index = tf.minimum(tf.reduce_sum(tf.cast(table < needed, tf.int32)), len(buckets) - 1)
        needed = tf.gather(table, index)
    batch = {name: value[:, :needed] for name, value in batch.items()}
    for name in input_names(model):
        batch.setdefault(name, tf.zeros_like(batch["token_ids"]))
    inputs = {name: batch[name] for name in input_names(model)}
    return inputs, {name: value[:, :needed] for name, value in extra.items()}, truncated


def graph_offsets(config, tokenizer) -> bool:
    """Whether the text signature gives character offsets: the task's reads them, and the tokenizer has them
    (XLM's has none, as Transformers' Python tokenizer: its token classification reads words from tokens;
    for a question and context it gives the context's words)."""
    task = TASKS[config["task"]]
    return task.offsets and (getattr(tokenizer, "graph_offsets", False) or len(task.text_inputs) > 1)


def text_checks(texts, names):
    """TF ops refusing a text signature's strings that are not one [batch] tensor each, all of one batch (a
    loaded signature does not check its arguments' shapes: a scalar crashed tf-text's ops, a [1, 2] tensor was
    read as its first text), and bytes that are not UTF-8 (the tokenizer would read them as best it can). A
    SavedModel runs them before the tokenizer (TFLite has no assert op)."""
    import tensorflow as tf

    checks = []
    for name, text in zip(names, texts):
        # (the first and second dimensions, -1 where there is none: runtime values, which no graph rewrite
        # folds; a loaded signature does not check the rank itself)
        first, second = tf.unstack(tf.concat([tf.shape(text), [-1, -1]], 0)[:2], num=2)
        message = f"{name}: must be a [batch] string tensor, one text per row (not a scalar, not 2-D)"
        checks.append(tf.debugging.assert_equal(tf.size(text), first, message=message))
        checks.append(tf.debugging.assert_equal(second, -1, message=message))
        # (a transcoding that replaces what is not UTF-8 changes only such texts; surrogates and overlong
        # forms included, as Python's decoder)
        valid = tf.equal(tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace"), text)
        checks.append(tf.debugging.assert_equal(tf.reduce_all(valid), True, message=f"{name}: holds bytes that "
                                                "are not UTF-8 (each text must be a UTF-8 string)"))
    for name, text in zip(names[1:], texts[1:]):
        checks.append(tf.debugging.assert_equal(tf.size(text), tf.size(texts[0]), message=f"{names[0]} and {name} "
                                                "must hold the same number of texts"))
    return checks


def text_specs(config, any_rank=False):
    """The text signature's inputs: a string [None] per name the task declares (kzoo.tasks: "text", or
    "question" and "context"); with `any_rank`, of any shape (a SavedModel's: text_checks refuses all but
    [batch] at run time, and graph rewrites that trusted a declared rank let other ops fail first)."""
    import tensorflow as tf

    shape = None if any_rank else [None]
    return [tf.TensorSpec(shape, tf.string, name=name) for name in TASKS[config["task"]].text_inputs]


def text_function(tokenizer, model, config, numeric, strings, length, buckets=None):
    """The text signature: strings in -> `strings(numeric(the model's inputs) + the tokenizer's offsets)`
    and truncated; `numeric` is the XLA part (SavedModel: compiled, its batch padded by `bucketed`)."""
    offsets = graph_offsets(config, tokenizer)

    def serve_text(*texts):
        batch, extra, truncated = encode_in_graph(tokenizer, model, texts, length, buckets, offsets)
        return {**strings({**numeric(batch), **extra}), "truncated": truncated}

    return serve_text
