"""Conversion and loading stream: each peaks near the size of the weights themselves.

Each checkpoint tensor becomes a TF variable without a second copy beside it (aligned reads
adopted through DLPack), and saving writes large variables in row blocks.
"""

import json
import subprocess
import sys

import pytest

from reference import TINY_ALBERT, make_checkpoint

MEASURE = r"""
import json, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
import kzoo, tensorflow, keras, numpy
from kzoo.converters.convert import convert
from kzoo.converters.readers import open_checkpoint
# Warm up: TF's first graph trace costs ~150 MB once, whatever the model's size; that is
# the framework's baseline, not the conversion's.
from kzoo.models import build_model
build_model({"architecture": "albert", "task": "masked_lm", "backbone": {
    "vocabulary_size": 10, "num_layers": 1, "num_heads": 1, "hidden_dim": 4, "intermediate_dim": 4,
    "embedding_dim": 4}})
base = hwm()
if sys.argv[1] == "convert":
    convert(sys.argv[2], sys.argv[3])
    with open_checkpoint(sys.argv[2]) as ckpt:
        size = ckpt.nbytes
else:
    size = 4 * kzoo.load(sys.argv[3]).count_params()
print(json.dumps({"base": base, "peak": hwm(), "size": size}))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # ~190 MB: a wide embedding and FFN so that the weights dominate TF's own overhead.
    tmp = tmp_path_factory.mktemp("memory")
    return make_checkpoint(tmp / "ref", "AlbertForMaskedLM",
                           {**TINY_ALBERT, "vocab_size": 30000, "embedding_size": 512, "hidden_size": 512,
                            "intermediate_size": 4096, "max_position_embeddings": 512}), tmp / "out"


def _peak_ratio(step, src, out):
    res = subprocess.run([sys.executable, "-c", MEASURE, step, str(src), str(out)],
                         capture_output=True, text=True, check=True)
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["size"] > 100e6
    return (m["peak"] - m["base"]) / m["size"]


def test_conversion_then_loading_peak_near_the_weights(checkpoint):
    # Measured here: conversion 1.14x the checkpoint (1.97x before the aligned reads and blockwise
    # saves), loading 1.03x the fp32 weights (1.09x with an aligned copy of each h5 dataset). The
    # rest is Keras/TF overhead.
    ratio = _peak_ratio("convert", *checkpoint)
    assert ratio < 1.4, f"conversion peaked at {ratio:.2f}x the checkpoint size"
    ratio = _peak_ratio("load", *checkpoint)
    assert ratio < 1.06, f"loading peaked at {ratio:.2f}x the fp32 weights"
