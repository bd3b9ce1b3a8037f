"""Conversion streams: peak memory stays under twice the checkpoint's size."""

import json
import subprocess
import sys

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
from kzoo.modeldir import build_model
build_model({"architecture": "albert", "task": "masked_lm", "backbone": {
    "vocabulary_size": 10, "num_layers": 1, "num_heads": 1, "hidden_dim": 4, "intermediate_dim": 4,
    "embedding_dim": 4}})
base = hwm()
convert(sys.argv[1], sys.argv[2])
with open_checkpoint(sys.argv[1]) as ckpt:
    size = ckpt.nbytes
print(json.dumps({"base": base, "peak": hwm(), "size": size}))
"""


def test_peak_memory_under_twice_checkpoint(tmp_path):
    # ~190 MB: a wide embedding and FFN so that the weights dominate TF's own overhead.
    src = make_checkpoint(tmp_path / "ref", "AlbertForMaskedLM",
                          {**TINY_ALBERT, "vocab_size": 30000, "embedding_size": 512, "hidden_size": 512,
                           "intermediate_size": 4096, "max_position_embeddings": 512})
    out = subprocess.run([sys.executable, "-c", MEASURE, str(src), str(tmp_path / "out")],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = (m["peak"] - m["base"]) / m["size"]
    assert m["size"] > 100e6
    assert ratio < 2.0, f"conversion peaked at {ratio:.2f}x the checkpoint size"
