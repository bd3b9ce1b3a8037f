"""How the CLI speaks: JSON, progress bars on stderr, and TensorFlow's start-up noise kept out."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager


def print_json(obj):
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable))


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


@contextmanager
def progress_bar(description, enabled=True):
    """Yields a factory `(total) -> advance(n)` drawing a rich progress bar on stderr (a terminal only:
    in a log or a pipe a bar is noise)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        def factory(total):
            task = bar.add_task(description, total=total)
            return lambda n=1: bar.advance(task, n)

        yield factory


def import_tensorflow_quietly():
    """TF's C++ start-up logs (CUDA probing, oneDNN notes) go to fd 2 before any flag can
    silence them; a CLI user should see kzoo's output, not that. Python errors still show."""
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            tensorflow.config.list_physical_devices()  # device probing logs too
    finally:
        os.dup2(saved, 2)
        os.close(saved)
