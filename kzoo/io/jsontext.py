"""Strict JSON for reports and `--json` output: numpy values and paths as plain JSON, and a number
that is not finite (NaN, inf: a broken export's metric) as null, which every JSON reader takes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def dumps(obj) -> str:
    return json.dumps(_plain(obj), indent=2, ensure_ascii=False, allow_nan=False)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return _plain(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x
