"""sentence-transformers dirs (bge-m3, multilingual-e5, paraphrase-multilingual-*): `modules.json` -> the
encoder's Hugging Face dir and the kzoo `sentence_embedding` head (kzoo.models.layers.SentenceEmbedding).

Both layouts are read: sentence-transformers 6 writes `1_Pooling/config.json` with `"pooling_mode": "mean"`
and keeps max_seq_length as the tokenizer's model_max_length; the Hub's older dirs have `pooling_mode_*`
booleans and `sentence_bert_config.json`'s max_seq_length.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kzoo.converters.readers import open_checkpoint
from kzoo.converters.tensors import CheckpointError
from kzoo.io.arrays import transpose

# torch activations a Dense module names -> kzoo.models.layers.ACTIVATIONS (None: identity)
ACTIVATIONS = {"torch.nn.modules.activation.Tanh": "tanh", "torch.nn.modules.linear.Identity": None,
               "torch.nn.modules.activation.ReLU": "relu", "torch.nn.modules.activation.GELU": "gelu",
               "torch.nn.modules.activation.Sigmoid": "sigmoid"}
LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                  "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclasses.dataclass
class SentenceTransformerDir:
    encoder: Path  # the Transformer module's dir: a Hugging Face checkpoint with its tokenizer
    task_config: dict  # SentenceEmbedding's arguments: pooling, dense, normalize
    max_seq_length: int | None  # sentence-transformers cuts every text to this many tokens
    dense_dirs: list  # each Dense module's dir (its linear.weight / linear.bias)
    prompts: dict  # config_sentence_transformers.json's named prompts (e5's "query: ") and default_prompt_name


def _json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing (modules.json names its module)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(value, (dict, list)):
        raise CheckpointError(f"{file}: expected a JSON object")
    return value


def read(src: Path) -> SentenceTransformerDir | None:
    """The sentence-transformers model in `src` (None when it has no modules.json)."""
    if not (src / "modules.json").is_file():
        return None
    modules = _json(src / "modules.json")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{src / 'modules.json'}: expected a list of modules")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[0] != "Transformer":
        raise CheckpointError(f"{src / 'modules.json'}: the first module is a {kinds[0]}, not a Transformer")
    encoder = src / modules[0].get("path", "")
    config = {"pooling": ["cls"], "dense": [], "normalize": False}
    dense_dirs = []
    for module, kind in zip(modules[1:], kinds[1:]):
        path = src / module.get("path", "")
        if kind == "Pooling":
            config["pooling"] = _pooling(_json(path / "config.json"), path)
        elif kind == "Dense":
            config["dense"].append(_dense(_json(path / "config.json"), path))
            dense_dirs.append(path)
        elif kind == "Normalize":
            config["normalize"] = True
        elif kind != "Dropout":  # (identity at inference)
            raise CheckpointError(f"{src / 'modules.json'}: module {module.get('type')} is not supported by kzoo "
                                  "(Transformer, Pooling, Dense, Normalize, Dropout)")
    bert_config = src / "sentence_bert_config.json"
    settings = _json(bert_config) if bert_config.is_file() else {}
    if settings.get("do_lower_case"):
        raise CheckpointError(f"{bert_config}: do_lower_case is not supported by kzoo")
    max_seq_length = settings.get("max_seq_length")
    if max_seq_length is None and (encoder / "tokenizer_config.json").is_file():
        max_seq_length = _json(encoder / "tokenizer_config.json").get("model_max_length")
    if not isinstance(max_seq_length, int) or max_seq_length > 10**7:  # (Transformers' "no limit": 1e30)
        max_seq_length = None
    return SentenceTransformerDir(encoder, config, max_seq_length, dense_dirs, _prompts(src))


def _prompts(src):
    """{"prompts": {name: text}, "default_prompt_name": name or None} of config_sentence_transformers.json."""
    file = src / "config_sentence_transformers.json"
    settings = _json(file) if file.is_file() else {}
    if not isinstance(settings, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    prompts = settings.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None)))
                                                for k, v in prompts.items()):
        raise CheckpointError(f"{file}: prompts must map names to strings")
    prompts = {name: text or "" for name, text in prompts.items()}  # (sentence-transformers: None -> "")
    default = settings.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise CheckpointError(f"{file}: default_prompt_name {default!r} is not one of its prompts "
                              f"({', '.join(prompts) or 'none'})")
    return {"prompts": prompts, "default_prompt_name": default}


def _pooling(config, path):
    if config.get("include_prompt") is False:  # (pooling that leaves the prompt's tokens out: not built)
        raise CheckpointError(f"{path / 'config.json'}: include_prompt false is not supported by kzoo")
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for key, mode in LEGACY_POOLING.items() if config.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    unknown = [m for m in modes if m not in LEGACY_POOLING.values()]
    if unknown:
        raise CheckpointError(f"{path / 'config.json'}: pooling mode {unknown[0]!r} is not one kzoo knows "
                              f"({', '.join(LEGACY_POOLING.values())})")
    return modes


def _dense(config, path):
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{path / 'config.json'}: activation_function {activation} is not supported by kzoo "
                              f"({', '.join(ACTIVATIONS)})")
    if config.get("use_residual"):
        raise CheckpointError(f"{path / 'config.json'}: use_residual is not supported by kzoo")
    return {"units": int(config["out_features"]), "bias": bool(config.get("bias", True)),
            "activation": ACTIVATIONS[activation]}


def dense_weights(st: SentenceTransformerDir):
    """{Keras variable path: array} of the Dense modules, read from their dirs (shapes checked by the caller)."""
    arrays = {}
    for i, (path, layer) in enumerate(zip(st.dense_dirs, st.task_config["dense"])):
        with open_checkpoint(path) as ckpt:
            names = set(ckpt.names())
            arrays[f"dense_{i}/kernel"] = transpose(ckpt.get("linear.weight"))
            if layer["bias"]:
                arrays[f"dense_{i}/bias"] = ckpt.get("linear.bias")
            extra = names - {"linear.weight", "linear.bias"}
            if extra:
                raise CheckpointError(f"{path}: unexpected tensors {sorted(extra)} in a Dense module")
    return arrays
