"""TVM's own log lines, kept from the user unless asked for.

TVM's C++ code writes warnings straight to file descriptor 2 (e.g. one "Scope Saving" line per
constant when a library is exported: 161 lines for one model), out of Python's reach. Around the
TVM calls that log, :func:`tvm_quiet` points descriptor 2 at a temporary file and afterwards
writes back every line that is not a TVM log line, so the user's own output and Python's
warnings still show. If an error escapes, everything captured is written back (the log may say
why). Nothing is held back when ``TVM_LOG_DEBUG`` is set (TVM's switch for its debug log) or
after :func:`show` (the CLI's ``--debug``).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading

#: A TVM log line: ``[hh:mm:ss] path/file.cc:123: message`` (C++ source location after a time).
TVM_LOG_LINE = re.compile(rb"^\[\d{2}:\d{2}:\d{2}\] \S+\.(cc|h|cpp):\d+: ")

_shown = False
_lock = threading.RLock()
_depth = 0


def show(enabled: bool = True) -> None:
    """Let TVM's log lines through (``--debug``)."""
    global _shown
    _shown = enabled


def _showing() -> bool:
    return _shown or bool(os.environ.get("TVM_LOG_DEBUG"))


class tvm_quiet:
    """``with tvm_quiet(): ...``: TVM's log lines written inside are dropped, other output kept.

    Descriptor 2 is the process's: the block holds a lock so that two threads do not redirect it
    at once, and nested blocks redirect once.
    """

    def __enter__(self):
        global _depth
        self._active = not _showing()
        self._file = None
        if not self._active:
            return self
        _lock.acquire()
        _depth += 1
        if _depth == 1:
            sys.stderr.flush()
            self._saved = os.dup(2)
            self._file = tempfile.TemporaryFile()
            os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, kind, error, trace):
        global _depth
        if not self._active:
            return
        try:
            if self._file is not None:
                sys.stderr.flush()
                os.dup2(self._saved, 2)
                os.close(self._saved)
                self._file.seek(0)
                captured = self._file.read()
                self._file.close()
                kept = captured if kind is not None else b"".join(
                    line for line in captured.splitlines(keepends=True)
                    if not TVM_LOG_LINE.match(line))
                if kept:
                    os.write(2, kept)
        finally:
            _depth -= 1
            _lock.release()
