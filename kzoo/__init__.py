"""kzoo: ALBERT, XLM-RoBERTa and XLM for TensorFlow/Keras 3.

    import kzoo
    model = kzoo.load("out/albert-base-v2")        # a keras.Model with its head
    tok = kzoo.load_tokenizer("out/albert-base-v2")
    logits = model(tok(["Hello I'm a [MASK] model."]))
    kzoo.pipeline("fill-mask", "out/albert-base-v2")("Hello I'm a [MASK] model.")
    kzoo.generate("out/xlm-clm-enfr-1024", "Bonjour", lang="fr")   # XLM text generation
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def load(path):
    """A kzoo model dir as a Keras model (the task model with its head)."""
    from kzoo.modeldir import load as _load

    return _load(path)


def load_tokenizer(path):
    """The tokenizer of a kzoo model dir (same ids as the original Transformers tokenizer)."""
    from kzoo.tasks import load_tokenizer as _load_tokenizer

    return _load_tokenizer(path)


def pipeline(task, model, tokenizer=None):
    """`"fill-mask"`, `"features"` or (XLM) `"text-generation"` on a model dir (or a Keras
    model + tokenizer)."""
    from kzoo.tasks import pipeline as _pipeline

    return _pipeline(task, model, tokenizer)


def generate(model, prompt, **kwargs):
    """XLM text generation: `kzoo.generate("out/xlm", "Bonjour", lang="fr", max_new_tokens=20)`;
    samplers greedy / top-k / top-p / beam. See kzoo.generation.Generator."""
    from kzoo.generation import generate as _generate

    return _generate(model, prompt, **kwargs)


def from_preset(name, task="backbone"):
    """A randomly initialised model of a published architecture, e.g. "albert-base-v2"."""
    from kzoo.modeldir import build_model
    from kzoo.presets import PRESETS

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; kzoo has {sorted(PRESETS)}")
    return build_model({**PRESETS[name], "task": task})
