"""The tasks (heads) kzoo builds, each declared once.

A task is a model dir's "task" and a `--task` choice. Its declaration says what the Keras model
outputs, which pipelines run it (kzoo.pipelines), and what its export's text signature computes
(a function here, in TF, shared with the pipelines; kzoo.export reads it). Each family declares
which tasks it has, with a class per task in its model file or shared in kzoo.models.layers
(kzoo.families). Adding a head means its class, its weight-table rows, a `Task` here and its pipeline;
docs/architecture.md says how.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Callable

from kzoo.tasks import classification, features, fill_mask, question_answering


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    summary: str  # what the head computes, in one line (help text)
    outputs: tuple  # the Keras model's outputs ("logits": one tensor)
    pipelines: tuple  # names of the pipelines that run it (kzoo.pipelines.PIPELINES)
    # The export's text signature: (model, config, tokenizer, **options) -> (numeric, strings); see
    # kzoo.tasks.fill_mask. None: the task has no text signature.
    text_signature: Callable | None = None
    text_options: MappingProxyType = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    # (the text signature's options and their defaults)
    choices: bool = False  # inputs [B, C, S]: C choices per example, each one a row of the backbone
    labelled: bool = False  # its classes have names (config.json's id2label)
    # The text signature's string inputs ([B] each; two: a text pair, the first one first) and whether its
    # `strings` half gets the tokenizer's offset_mapping, word_offsets and sequence_ids (characters out).
    text_inputs: tuple = ("text",)
    offsets: bool = False
    # outputs ([B, S, ...], of the model or its text signature) with a value per token: an export's check
    # compares them at real tokens only
    token_outputs: tuple = ()


TASKS = MappingProxyType({t.name: t for t in [
    Task("backbone", "the encoder alone: sequence_output [B, S, H] (and pooled_output [B, H])",
         ("sequence_output", "pooled_output"), ("features",), features.text_signature,
         token_outputs=("sequence_output",)),
    Task("masked_lm", "the masked-LM head: logits [B, S, V]",
         ("logits",), ("fill-mask", "features", "text-generation"), fill_mask.text_signature,
         MappingProxyType(fill_mask.OPTIONS), token_outputs=("logits",)),
    Task("pretraining", "both pretraining heads: mlm_logits [B, S, V], sop_logits [B, 2] (ALBERT)",
         ("mlm_logits", "sop_logits"), ("fill-mask", "features"), fill_mask.text_signature,
         MappingProxyType(fill_mask.OPTIONS), token_outputs=("mlm_logits",)),
    Task("classifier", "sequence classification: logits [B, num_classes]",
         ("logits",), ("text-classification", "zero-shot-classification", "features"), classification.text_signature, labelled=True),
    Task("token_classifier", "token classification: logits [B, S, num_classes]",
         ("logits",), ("token-classification", "features"), classification.text_signature, labelled=True,
         offsets=True, token_outputs=("logits", "scores")),
    Task("question_answering", "extractive question answering: start_logits [B, S], end_logits [B, S]",
         ("start_logits", "end_logits"), ("question-answering", "features"), question_answering.text_signature,
         MappingProxyType(question_answering.OPTIONS), text_inputs=("question", "context"), offsets=True,
         token_outputs=("start_logits", "end_logits")),
    Task("sentence_embedding", "a sentence-transformers model: pooling, dense layers, normalisation: "
         "sentence_embedding [B, D]", ("sentence_embedding",), ("sentence-embedding",), features.text_signature),
    Task("multiple_choice", "multiple choice: inputs [B, C, S] (C choices), logits [B, C]",
         ("logits",), (), choices=True),
]})
