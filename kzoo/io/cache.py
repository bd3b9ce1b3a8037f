"""kzoo's disk cache: what takes seconds to derive from a tokenizer and is the same every time (the folded
normaliser's rules at conversion, the code-point table of an in-graph tokenizer at export), kept between
processes under a name made of everything it is computed from. Processes that need one entry at the same
time compute it once: the others wait for it (a lock file per entry, under .locks/)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
import zlib
from pathlib import Path

try:
    import fcntl
except ImportError:  # (not POSIX: no waiting, each process computes)
    fcntl = None

from kzoo.errors import ModelDirError
from kzoo.io.atomic import atomic_file


def cache_dir() -> Path | None:
    """$KZOO_CACHE_DIR, else $XDG_CACHE_HOME/kzoo, else ~/.cache/kzoo; None (no cache) when KZOO_NO_CACHE is
    set."""
    if os.environ.get("KZOO_NO_CACHE"):
        return None
    if os.environ.get("KZOO_CACHE_DIR"):
        return Path(os.environ["KZOO_CACHE_DIR"])
    try:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kzoo"
    except RuntimeError:  # (no home directory)
        return None


def disk_cached(kind: str, parts: tuple, compute, dump, load, *, source: str, versions: tuple = ()):
    """compute(), kept in cache_dir()/kind/ under a name made of `parts`, the code that computes it (the file
    `source`) and `versions` (of the libraries it calls). A file that cannot be read is computed again; one
    that cannot be written is a warning. dump: value -> bytes; load: bytes -> value (ValueError, TypeError
    or OSError when they are not one)."""
    key = hashlib.sha256(repr(versions).encode())
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode()
        key.update(len(data).to_bytes(8, "little") + data)
    try:
        key.update(Path(source).read_bytes())
        directory = cache_dir()
    except OSError:  # (no source file to read: no cache)
        directory = None
    file = None if directory is None else directory / kind / key.hexdigest()[:32]
    with _only_one(None if file is None else directory / ".locks" / f"{kind}-{file.name}"):
        if file is not None and file.is_file():
            try:
                return load(zlib.decompress(file.read_bytes()))
            except (OSError, ValueError, TypeError, zlib.error):
                pass
        value = compute()
        if file is not None:
            try:
                with atomic_file(file, overwrite=True) as part:  # (whole or not at all, also beside another writer)
                    part.write_bytes(zlib.compress(dump(value), 1))
            except (OSError, ModelDirError) as e:
                warnings.warn(f"kzoo's tokenizer cache was not written ({e}); set KZOO_CACHE_DIR, or KZOO_NO_CACHE=1",
                              stacklevel=3)
        return value


@contextlib.contextmanager
def _only_one(lock_file):
    """Held by one process at a time (an exclusive flock; the system drops it when a process dies). Where the
    lock file cannot be made, nobody waits."""
    handle = None
    if lock_file is not None and fcntl is not None:
        try:
            lock_file.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_file, "a")
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            if handle is not None:
                handle.close()
            handle = None
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # (releases the lock)
