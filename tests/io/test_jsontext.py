"""Reports and --json output are strict JSON: a broken export's NaN metric is null, not bare NaN."""

import json
from pathlib import Path

import numpy as np

from kzoo.io.jsontext import dumps


def test_strict_json():
    report = {"max_abs_diff": float("nan"), "cosine": np.float32("inf"), "ids": np.arange(3, dtype=np.int32),
              "out": Path("a/b"), "rows": [{"ok": np.bool_(True), "diff": np.float64(0.5)}], "name": "café"}
    text = dumps(report)
    assert "NaN" not in text and "Infinity" not in text and "café" in text
    assert json.loads(text) == {"max_abs_diff": None, "cosine": None, "ids": [0, 1, 2], "out": "a/b",
                                "rows": [{"ok": True, "diff": 0.5}], "name": "café"}
