"""The Keras models: one file per family (albert.py, xlm_roberta.py, xlm.py) on shared layers.

`build_model(config)` builds any of them from a model dir's config, reading the family's
declaration (kzoo.families); `load_model(path)` loads a model dir; `outputs(model, inputs)` calls
one and names its outputs.
"""

from __future__ import annotations

import numbers

from kzoo.errors import ModelDirError
from kzoo.families import get_family
from kzoo.io import modeldir
from kzoo.tasks import TASKS


def build_model(config, **backbone_overrides):
    """A freshly initialised Keras model for a model-dir config dict ({"architecture", "task",
    "backbone", "task_config"}). backbone_overrides: build options such as `mask_bias`."""
    family = get_family(config.get("architecture"))
    task = config.get("task")
    backbone_config = {**config["backbone"], **backbone_overrides}
    task_class = None if task == "backbone" else family.task_class(task)
    if task_class is not None and task_class.uses_pooler is not None \
            and family.backbone_class().has_pooler:  # Transformers' add_pooling_layer
        backbone_config["use_pooler"] = task_class.uses_pooler
    try:
        backbone = family.backbone_class()(**backbone_config, name=family.keras_name)
        return backbone if task_class is None else task_class(backbone, **config.get("task_config", {}))
    except (TypeError, ValueError) as e:  # an argument the model has not, or a size that cannot be
        raise ModelDirError(f"not a valid {family.name} configuration: {str(e).splitlines()[0]}") from None


def load_model(path, **backbone_overrides):
    """A kzoo model dir as a Keras model (the task model with its head), its config as
    `model.kzoo_config`. backbone_overrides: build options such as `mask_bias`."""
    from kzoo.io import keras_internals  # (Keras: imported on use, so that reading configs stays light)

    config = modeldir.read_config(path)
    with keras_internals.deferred_variables():  # no random init: each variable comes from the file
        model = build_model(config, **backbone_overrides)
    modeldir.load_weights(model, path)
    model.kzoo_config = config
    return model


def new_head_paths(model) -> set:
    """Paths of the variables a task adds to a pretrained encoder: its head's, and the pooler's where the
    head reads the pooled output. Transformers initialises these afresh when a checkpoint lacks them
    (a classifier made from a masked-LM checkpoint); every other variable must come from the weights."""
    if model is getattr(model, "backbone", model):
        return set()
    encoder = {id(v) for v in model.backbone.weights}
    paths = {v.path for v in model.weights if id(v) not in encoder}
    pooler = getattr(model.backbone, "pooler", None)
    return paths | ({v.path for v in pooler.weights} if pooler is not None else set())


def classes(task, labels=None, num_classes=None) -> dict:
    """The config entries naming a new head's classes: {"labels": {"0": name, ...}, "task_config":
    {"num_classes": n}} from class names (a list, or a dict id -> name) or a count (names LABEL_i, as
    Transformers'); {} when neither is given."""
    if labels is None and num_classes is None:
        return {}
    if not TASKS[task].labelled:
        raise ModelDirError(f"the task {task!r} has no classes; labels and num_classes are for "
                            f"{', '.join(t.name for t in TASKS.values() if t.labelled)}")
    if isinstance(labels, str):
        raise ModelDirError(f"labels must be a list of class names, not the str {labels!r} (a str would be one name "
                            f"per character): e.g. labels={labels.split(',')!r}")
    if isinstance(labels, dict):
        labels = [labels[k] for k in sorted(labels, key=int)]
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                    or num_classes < 1):
        raise ModelDirError(f"the number of labels must be a whole number >= 1, got {num_classes!r}")
    if labels is not None and not all(isinstance(n, str) and n for n in labels):
        raise ModelDirError(f"labels must be non-empty strings: {list(labels)!r}")
    names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(int(num_classes))]
    if num_classes is not None and int(num_classes) != len(names):
        raise ModelDirError(f"{len(names)} labels but num_classes={num_classes}")
    if not names or len(set(names)) != len(names):
        raise ModelDirError(f"labels must be distinct names, at least one: {names}")
    return {"labels": {str(i): name for i, name in enumerate(names)}, "task_config": {"num_classes": len(names)}}


def with_new_head(source, task, *, num_classes=None, labels=None):
    """The encoder of `source` (a model loaded by `load_model`) under a new `task` head (kzoo.tasks),
    initialised as Transformers initialises a head a checkpoint lacks; returns the model, its config as
    `kzoo_config` and the new variables' paths as `kzoo_initialized`. labels: class names, or num_classes."""
    config = {k: v for k, v in source.kzoo_config.items() if k not in ("format", "format_version")}
    config.update(task=task, labels=None, problem_type=None, task_config={})
    if task != "backbone":
        get_family(config["architecture"]).task_class(task)  # (raises when the family has no such task)
    config.update(classes(task, labels, num_classes))
    config["backbone"] = {k: v for k, v in config["backbone"].items() if k != "use_pooler"}  # (the head says)
    model = build_model(config)
    theirs = {v.path: v for v in getattr(source, "backbone", source).weights}
    for variable in model.weights:
        if variable.path in theirs:  # (the same backbone config: the same shapes)
            variable.assign(theirs[variable.path])
    model.kzoo_config = config
    model.kzoo_initialized = sorted(v.path for v in model.weights if v.path not in theirs)
    return model


def config_of(model) -> dict:
    """A model dir config for a kzoo Keras model: the one it was loaded with (`kzoo_config`), else read
    from its classes and their constructor arguments (a model built in Python)."""
    from kzoo.families import FAMILIES

    if getattr(model, "kzoo_config", None) is not None:
        return {k: v for k, v in model.kzoo_config.items() if k not in ("format", "format_version")}
    backbone = getattr(model, "backbone", model)
    for family in FAMILIES.values():
        if type(backbone).__name__ != family.backbone:
            continue
        tasks = {cls: task for task, cls in family.tasks.items()}
        task = "backbone" if model is backbone else tasks.get(type(model).__name__)
        if task is None:
            break
        task_config = {} if model is backbone else {k: getattr(model, k) for k in model.config_keys}
        backbone_config = {k: v for k, v in backbone.get_config().items() if k not in ("name", "use_pooler")}
        return {"architecture": family.name, "task": task, "backbone": backbone_config, "task_config": task_config,
                "labels": None, "problem_type": None}
    raise ModelDirError(f"{type(model).__name__} is not a kzoo model (kzoo.load, kzoo.from_preset make them)")


def save_model(model, out, *, tokenizer=None, labels=None, overwrite=False) -> dict:
    """Writes `model` (a kzoo Keras model, e.g. after `fit`) as a model dir at `out` that every command
    accepts, with `tokenizer`'s files (a kzoo tokenizer, or the model dir to take them from); labels:
    class names for a classifier's ids. Written aside and renamed into place. Returns the config."""
    import shutil
    from pathlib import Path

    from kzoo.families import find_preset
    from kzoo.io.atomic import atomic_dir

    config = config_of(model)
    if labels is not None:
        named = classes(config["task"], labels)
        if named["task_config"]["num_classes"] != config["task_config"].get("num_classes"):
            raise ModelDirError(f"{len(named['labels'])} labels for a {config['task']} with "
                                f"{config['task_config'].get('num_classes')} classes")
        config["labels"] = named["labels"]
    config["preset"] = find_preset(config["architecture"], config["backbone"])
    if isinstance(tokenizer, (str, Path)) and not Path(tokenizer).is_dir():
        raise ModelDirError(f"tokenizer={str(tokenizer)!r}: no such directory (give a kzoo tokenizer, or the model "
                            "dir whose tokenizer files to copy)")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        modeldir.save(model, config, tmp)
        if isinstance(tokenizer, (str, Path)):  # a model dir: its tokenizer files (all but config, weights)
            for f in Path(tokenizer).iterdir():
                if f.is_file() and f.name not in (modeldir.CONFIG, modeldir.WEIGHTS):
                    shutil.copyfile(f, Path(tmp) / f.name)
        elif tokenizer is not None:
            tokenizer.save(tmp)
    return config


def input_limits(architecture, backbone_config):
    """({input: (lowest, highest + 1) or None}, the longest input in tokens) of a family's model."""
    backbone = get_family(architecture).backbone_class()
    return backbone.input_ranges(backbone_config), backbone.max_tokens(backbone_config)


def optional_inputs(architecture) -> dict:
    """{input: the value meaning "not given"} for the inputs a caller of the family's model may leave out."""
    return dict(get_family(architecture).backbone_class().optional_inputs)


def outputs(model, inputs, training=False) -> dict:
    """The model's outputs as a dict: its own names, or {"logits": ...} for a single tensor."""
    out = model(inputs, training=training)
    return dict(out) if isinstance(out, dict) else {"logits": out}


def output_names(model) -> list:
    out = model.output
    return sorted(out) if isinstance(out, dict) else ["logits"]
