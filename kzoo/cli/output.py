"""How the CLI speaks: JSON, progress bars on stderr, and TensorFlow's start-up noise kept out."""

from __future__ import annotations

import sys
from contextlib import contextmanager


def print_json(obj):
    from kzoo.io.jsontext import dumps

    print(dumps(obj))


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

            def advance(n=1, status=None):  # status: a few words after the description (loss, speed)
                bar.update(task, advance=n, **({"description": f"{description}  {status}"} if status else {}))

            return advance

        yield factory


def import_tensorflow_quietly():
    """TF's C++ start-up logs (CUDA probing, oneDNN notes) go to fd 2 before any flag can
    silence them; a CLI user should see kzoo's output, not that. Python errors still show."""
    if "tensorflow" in sys.modules:
        return
    from kzoo.io.stderr import native_quiet

    with native_quiet():
        import tensorflow

        tensorflow.config.list_physical_devices()  # device probing logs too
