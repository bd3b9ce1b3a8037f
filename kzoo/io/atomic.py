"""Atomic outputs: written aside, renamed into place only when complete.

An interrupted or failed write leaves nothing at OUT (and no half-written file under its name).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from kzoo.errors import ModelDirError


def check_absent(out, overwrite=False):
    """Fails early (before any slow work) when OUT exists and may not be replaced."""
    if Path(out).exists() and not overwrite:
        raise ModelDirError(f"{out} already exists (pass --overwrite to replace it)")


@contextlib.contextmanager
def atomic_dir(out, overwrite=False):
    """Yields a temporary dir beside `out`; renamed to `out` only if the block succeeds."""
    out = Path(out)
    check_absent(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private (0700); OUT gets the usual mode
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(out, overwrite=False):
    """`atomic_dir` for a single file: yields a temporary path beside `out` (nothing there yet),
    renamed to `out` only if the block succeeds."""
    out = Path(out)
    check_absent(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the writer creates it
    try:
        yield tmp
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
