"""Native libraries' notes on file descriptor 2, kept off the user's terminal.

TensorFlow and LiteRT print from C++ straight to fd 2 (start-up probing, converter pages, "Created
TensorFlow Lite XNNPACK delegate"), before or beyond any flag of theirs. Python errors still arrive
as exceptions. KZOO_VERBOSE=1 lets everything through.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def native_quiet():
    """fd 2 to /dev/null for the block (the whole process's: keep the block short)."""
    if os.environ.get("KZOO_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
