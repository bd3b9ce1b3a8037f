"""The Keras models: one file per family (albert.py, xlm_roberta.py, xlm.py) on shared layers.

`build_model(config)` builds any of them from a model dir's config, reading the family's
declaration (kzoo.families); `load_model(path)` loads a model dir; `outputs(model, inputs)` calls
one and names its outputs.
"""

from __future__ import annotations

from kzoo.errors import ModelDirError
from kzoo.families import get_family
from kzoo.io import modeldir


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
