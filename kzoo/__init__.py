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


def load(path, **build_options):
    """A kzoo model dir as a Keras model (the task model with its head). build_options: backbone build
    options over the config's, e.g. attention_chunk_size=None (attention over all queries at once)."""
    from kzoo.models import load_model

    return load_model(path, **build_options)


def load_tokenizer(path):
    """The tokenizer of a kzoo model dir (same ids as the original Transformers tokenizer)."""
    from kzoo.tokenizers import load_tokenizer as load_stored

    return load_stored(path)


def pipeline(task, model, tokenizer=None, **kwargs):
    """A pipeline by Transformers' name ("fill-mask", "text-classification", "token-classification",
    "question-answering", "zero-shot-classification", "sentence-embedding", "features", XLM's
    "text-generation") on a model dir, a SavedModel, a .tflite file, or a Keras model + tokenizer;
    kwargs: its options' defaults (Transformers' names). See kzoo.pipelines."""
    from kzoo.pipelines import pipeline as make

    return make(task, model, tokenizer, **kwargs)


def train(model, out, train, eval=None, **options):
    """Fine-tunes a task model dir (classifier, token classifier) on a file and writes `out`, a model dir:
    Transformers' Trainer's defaults and update, XLA-compiled. See kzoo.training.train."""
    from kzoo.training import train as run

    return run(model, out, train, eval, **options)


def generate(model, prompt, **kwargs):
    """XLM text generation: `kzoo.generate("out/xlm", "Bonjour", lang="fr", max_new_tokens=20)`;
    samplers greedy / top-k / top-p / beam. See kzoo.pipelines.generation.Generator."""
    from kzoo.pipelines.generation import generate as run

    return run(model, prompt, **kwargs)


def from_preset(preset, task=None, num_classes=None, labels=None):
    """A model with the head of `task` (kzoo.tasks; for a classifier, `num_classes` or `labels`):

    - preset a kzoo model dir: its weights; under a new head when `task` or the classes differ from the
      dir's, the head initialised as Transformers initialises one a checkpoint lacks
      (`model.kzoo_initialized` lists it);
    - preset a published architecture's name ("albert-base-v2", kzoo.families.PRESETS): random weights.
    """
    from pathlib import Path

    from kzoo.families import PRESETS
    from kzoo.models import build_model, classes, load_model, with_new_head

    if Path(str(preset)).is_dir():
        model = load_model(preset)
        if (task is None or task == model.kzoo_config["task"]) and num_classes is None and labels is None:
            return model
        return with_new_head(model, task or model.kzoo_config["task"], num_classes=num_classes, labels=labels)
    if preset not in PRESETS:
        raise ValueError(f"{preset!r} is neither a kzoo model dir nor a preset; kzoo has {sorted(PRESETS)}")
    task = task or "backbone"
    config = {**PRESETS[preset], "task": task, "task_config": {}, "labels": None,
              **classes(task, labels, num_classes)}
    model = build_model(config)
    model.kzoo_config = config
    return model


def save(model, out, tokenizer=None, labels=None, overwrite=False):
    """Writes a kzoo Keras model (loaded, from a preset, after `fit`) as a model dir at `out` that every
    command accepts; `tokenizer`: a kzoo tokenizer, or the model dir whose tokenizer files to copy."""
    from kzoo.models import save_model

    return save_model(model, out, tokenizer=tokenizer, labels=labels, overwrite=overwrite)
