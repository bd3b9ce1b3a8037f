"""The model families kzoo implements, each declared once.

Everything that knows a family reads its declaration: the model dir (which classes to build), the
converters (`kzoo.converters.<converter>`: the weight table), the tokenizers (which format a model
dir stores), the CLI's choices, the presets, the benchmarks. Adding a family means its model file
(kzoo/models/), its weight table (converters/) and one `Family` here; docs/architecture.md says how.

A declaration is plain data: classes are named, not imported, so reading it (e.g. for `--help`)
imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import MappingProxyType

from kzoo import presets
from kzoo.errors import ModelDirError


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # the model dir's "architecture"
    models: str  # the model file: the backbone class and one class per task
    backbone: str  # the backbone class in `models`
    tasks: MappingProxyType  # task name (kzoo.tasks) -> its class in `models`
    tokenizer: str  # the tokenizer format a model dir stores (kzoo.tokenizers.FORMATS)
    converter: str  # kzoo.converters.<converter>: the checkpoint's weight table and config keys
    presets: MappingProxyType  # preset name -> backbone config
    languages: bool = False  # takes lang_ids (XLM's language embeddings)
    # the backbone's embedding layers whose row for the padding id never trains: PyTorch's
    # nn.Embedding(padding_idx=...) gives it no gradient (fine-tuning leaves it as it was)
    padding_rows: tuple = ("token_embedding",)

    @property
    def keras_name(self) -> str:
        """The backbone's Keras name (weights are stored under it)."""
        return self.name.replace("-", "_")

    @property
    def task_names(self) -> tuple:
        return ("backbone", *self.tasks)

    def backbone_class(self):
        return getattr(importlib.import_module(self.models), self.backbone)

    def task_class(self, task):
        if task not in self.tasks:
            raise ModelDirError(f"{self.name} has no task {task!r}; it has {', '.join(self.task_names)}")
        return getattr(importlib.import_module(self.models), self.tasks[task])


def _family(**fields):
    fields["tasks"] = MappingProxyType(fields["tasks"])
    fields["presets"] = MappingProxyType(fields["presets"])
    return Family(**fields)


FAMILIES = MappingProxyType({f.name: f for f in [
    _family(
        name="albert",
        models="kzoo.models.albert",
        backbone="AlbertBackbone",
        tasks={"masked_lm": "AlbertMaskedLM", "pretraining": "AlbertPreTraining", "classifier": "AlbertClassifier",
               "token_classifier": "TokenClassifier", "question_answering": "QuestionAnswering",
               "multiple_choice": "MultipleChoice", "sentence_embedding": "SentenceEmbedding"},
        tokenizer="kzoo-sentencepiece",
        converter="albert",
        presets=presets.ALBERT,
    ),
    _family(
        name="xlm-roberta",
        models="kzoo.models.xlm_roberta",
        backbone="XLMRobertaBackbone",
        tasks={"masked_lm": "XLMRobertaMaskedLM", "classifier": "XLMRobertaClassifier",
               "token_classifier": "TokenClassifier", "question_answering": "QuestionAnswering",
               "multiple_choice": "MultipleChoice", "sentence_embedding": "SentenceEmbedding"},
        tokenizer="kzoo-sentencepiece",
        converter="xlm_roberta",
        presets=presets.XLM_ROBERTA,
        padding_rows=("token_embedding", "position_embedding"),  # (padding positions take position 1)
    ),
    _family(
        name="xlm",
        models="kzoo.models.xlm",
        backbone="XLMBackbone",
        tasks={"masked_lm": "XLMMaskedLM", "classifier": "XLMClassifier", "token_classifier": "TokenClassifier",
               "question_answering": "QuestionAnswering", "multiple_choice": "XLMMultipleChoice",
               "sentence_embedding": "SentenceEmbedding"},
        tokenizer="kzoo-xlm-bpe",
        converter="xlm",
        presets=presets.XLM,
        languages=True,
    ),
]})

# preset name -> {"architecture", "backbone"}: every family's presets in one table
PRESETS = MappingProxyType({name: {"architecture": f.name, "backbone": config}
                            for f in FAMILIES.values() for name, config in f.presets.items()})


def get_family(name) -> Family:
    if name not in FAMILIES:
        raise ModelDirError(f"unknown architecture {name!r}; kzoo knows {', '.join(FAMILIES)}")
    return FAMILIES[name]


def architecture_key(backbone) -> dict:
    """A backbone config without what leaves the architecture as it is (dropout, build options)."""
    return {k: v for k, v in backbone.items()
            if k not in ("dropout", "attention_dropout", "use_pooler", "mask_bias", "attention_chunk_size", "name")}


def find_preset(architecture, backbone):
    """The preset whose architecture equals `backbone` (dropout and build options aside), or None."""
    family = FAMILIES.get(architecture)
    for name, config in (family.presets.items() if family else ()):
        if architecture_key(config) == architecture_key(backbone):
            return name
    return None
