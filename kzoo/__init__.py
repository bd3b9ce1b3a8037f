"""kzoo: ALBERT, XLM-RoBERTa and XLM for TensorFlow/Keras 3.

    import kzoo
    model = kzoo.load("out/albert-base-v2")        # a keras.Model with its head
    tok = kzoo.load_tokenizer("out/albert-base-v2")
    logits = model(tok(["Hello I'm a [MASK] model."]))
    kzoo.pipeline("fill-mask", "out/albert-base-v2")("Hello I'm a [MASK] model.")
    kzoo.generate("out/xlm-clm-enfr-1024", "Bonjour", lang="fr")   # XLM text generation

The parts (docs/architecture.md): kzoo.families and kzoo.tasks declare what exists; kzoo.models,
kzoo.tokenizers, kzoo.io, kzoo.runtime and kzoo.pipelines run it; kzoo.converters writes model dirs,
kzoo.export writes SavedModels and .tflite files; kzoo.cli puts them together.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def load(path):
    """A kzoo model dir as a Keras model (the task model with its head)."""
    from kzoo.models import load_model

    return load_model(path)


def load_tokenizer(path):
    """The tokenizer of a kzoo model dir (same ids as the original Transformers tokenizer)."""
    from kzoo.tokenizers import load_tokenizer as load_stored

    return load_stored(path)


def pipeline(task, model, tokenizer=None, **kwargs):
    """`"fill-mask"`, `"features"` or (XLM) `"text-generation"` on a model dir, a SavedModel, a
    .tflite file, or a Keras model + tokenizer. See kzoo.pipelines."""
    from kzoo.pipelines import pipeline as make

    return make(task, model, tokenizer, **kwargs)


def generate(model, prompt, **kwargs):
    """XLM text generation: `kzoo.generate("out/xlm", "Bonjour", lang="fr", max_new_tokens=20)`;
    samplers greedy / top-k / top-p / beam. See kzoo.pipelines.generation.Generator."""
    from kzoo.pipelines.generation import generate as run

    return run(model, prompt, **kwargs)


def from_preset(name, task="backbone"):
    """A randomly initialised model of a published architecture, e.g. "albert-base-v2"."""
    from kzoo.families import PRESETS
    from kzoo.models import build_model

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; kzoo has {sorted(PRESETS)}")
    return build_model({**PRESETS[name], "task": task})
