"""Atomic outputs: written aside, renamed into place only when complete.

An interrupted or failed write leaves nothing at OUT. What is written aside lives beside OUT as
`.OUT.partial-PID-XXXX` (PID: the writing process): a process killed outright (SIGKILL, power loss)
cannot remove its own, so every write to OUT first removes those of processes no longer running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from kzoo.errors import ModelDirError


def check_absent(out, overwrite=False):
    """Fails early (before any slow work) when OUT exists and may not be replaced."""
    if Path(out).exists() and not overwrite:
        raise ModelDirError(f"{out} already exists (pass --overwrite to replace it)")


def overlaps(out, source) -> bool:
    """Whether writing `out` (replacing what is there) would touch `source`: `out` is it, holds it,
    or is something already inside it."""
    out, source = Path(out).resolve(), Path(source).resolve()
    return out == source or out in source.parents or (source in out.parents and out.exists())


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(out):
    """Removes what dead processes left beside OUT (their `.OUT.partial-PID-*`); returns the paths."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for path in out.parent.glob(f".{out.name}.partial-*"):
        pid = path.name[len(f".{out.name}.partial-"):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _prepare(out, overwrite):
    out = Path(out)
    check_absent(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)
        return out, f".{out.name}.partial-{os.getpid()}-"
    except OSError as e:
        raise ModelDirError(f"{out}: cannot write there ({_why(e, out)})") from None


def _created(make, out):
    try:
        return make()
    except OSError as e:
        raise ModelDirError(f"{out}: cannot write there ({_why(e, out)})") from None


def _why(error: OSError, out) -> str:
    """What stood in the way, naming the path that did (a file where a folder must be, ...; OUT's
    folder, not the partial kzoo was creating in it)."""
    name = error.filename
    if name and Path(name).name.startswith(f".{Path(out).name}.partial-"):
        name = str(Path(name).parent)
    if name and isinstance(error, (FileExistsError, NotADirectoryError)) and Path(name).is_file():
        return f"{name} is a file, not a folder"
    return f"{name}: {error.strerror}" if name and error.strerror else str(error.strerror or error)


@contextlib.contextmanager
def atomic_dir(out, overwrite=False):
    """Yields a temporary dir beside `out`; renamed to `out` only if the block succeeds."""
    out, prefix = _prepare(out, overwrite)
    tmp = Path(_created(lambda: tempfile.mkdtemp(prefix=prefix, dir=out.parent), out))
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
    out, prefix = _prepare(out, overwrite)
    fd, name = _created(lambda: tempfile.mkstemp(prefix=prefix, dir=out.parent), out)
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


@contextlib.contextmanager
def scratch_dir(out):
    """A temporary working dir beside `out` (removed after the block; if the process is killed, by the
    next write to `out`): large intermediate files stay where OUT goes, not in /tmp."""
    out, prefix = _prepare(out, overwrite=True)
    tmp = Path(_created(lambda: tempfile.mkdtemp(prefix=prefix + "scratch-", dir=out.parent), out))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def interrupts_kept():
    """A Ctrl-C or SIGTERM during the block is raised again when it ends if it got lost: Python drops an
    exception raised inside a finaliser (__del__), as in TF's gc.collect() while converting, and the write ran
    on to OUT. What the signal's handler raised (Python's Ctrl-C handler: KeyboardInterrupt; the CLI's SIGTERM
    handler: kzoo.cli.Terminated) is raised again; a signal with no Python handler (default: the process
    ends; ignored) is left as it is."""
    # (signals reach the main thread only)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: h for s in (signal.SIGINT, signal.SIGTERM) if callable(h := signal.getsignal(s))}
    raised = []

    def noted(signum, frame):
        try:
            previous[signum](signum, frame)
        except BaseException as e:
            raised.append(e)
            raise

    for signum in previous:
        signal.signal(signum, noted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if raised:  # (the block ended normally: what a handler raised was dropped)
        raise raised[0]
