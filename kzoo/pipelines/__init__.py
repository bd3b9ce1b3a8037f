"""Pipelines, named and shaped as Transformers' are: text in, Transformers' output formats out.

Each runs on a kzoo.runtime Runner, so it takes a model dir, a SavedModel, a .tflite file or a Keras
model alike. A model's task (kzoo.tasks) lists the pipelines that run it.
"""

from __future__ import annotations

from kzoo.pipelines.base import Pipeline, PipelineError
from kzoo.pipelines.classification import TextClassification, TokenClassification, ZeroShotClassification
from kzoo.pipelines.features import Features
from kzoo.pipelines.fill_mask import FillMask
from kzoo.pipelines.generation import Generator
from kzoo.pipelines.question_answering import QuestionAnswering
from kzoo.pipelines.sentence_embedding import SentenceEmbeddings

PIPELINES = {cls.name: cls for cls in (FillMask, Features, Generator, TextClassification, TokenClassification,
                                       ZeroShotClassification, QuestionAnswering, SentenceEmbeddings)}
ALIASES = {"embed": "features", "generate": "text-generation",
           "sentiment-analysis": "text-classification", "ner": "token-classification"}  # (Transformers' aliases)

__all__ = ["PIPELINES", "Pipeline", "PipelineError", "FillMask", "Features", "Generator", "TextClassification",
           "TokenClassification", "ZeroShotClassification", "QuestionAnswering", "SentenceEmbeddings", "pipeline"]


def pipeline(name, model, tokenizer=None, **kwargs):
    """`pipeline("fill-mask", "out/albert")`: the named pipeline on a model dir, a SavedModel, a
    .tflite file or a Keras model (with `tokenizer=`, a tokenizer or a dir holding one)."""
    cls = PIPELINES.get(ALIASES.get(name, name))
    if cls is None:
        raise PipelineError(f"unknown pipeline {name!r}; kzoo has {', '.join(PIPELINES)}")
    return cls(model, tokenizer, **kwargs)
