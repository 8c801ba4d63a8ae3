"""Keep native solvers' stray prints off standard output.

HiGHS (1.12) prints a debug line with C ``printf`` now and then, even with its log off; a caller
(the ``tvm-place solve`` CLI) writing JSON to standard output must not get it mixed in.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys


@contextlib.contextmanager
def solver_stdout_to_stderr():
    """Send the process's standard output to standard error while a native solver runs.

    HiGHS prints a debug line with C ``printf`` now and then, even with its log off; the CLI's
    standard output must hold nothing but its JSON. C buffers are flushed before fd 1 is restored.
    """
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
