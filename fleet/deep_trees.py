"""Deleting a directory tree however deep a job made it.

shutil.rmtree recurses once per level, so a tree deeper than Python's stack (a job's `cp -r . sub/`
in a loop, a runaway recursive unpack: 1,000 levels is enough) raises RecursionError, which
`ignore_errors` does not cover: the release or clean-up calling it would fail, the tree and its disk
left. `rm -rf` walks any depth by descriptors, never following links, as rmtree does.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

OnExc = Callable[[object, str, BaseException], None]


def rmtree(path: str | Path, *, ignore_errors: bool = False, onexc: OnExc | None = None) -> None:
    """shutil.rmtree(path, ignore_errors=..., onexc=...) (onexc as Python 3.12 calls it: the
    exception, not exc_info), with `rm -rf` taking over a tree too deep for Python. A tree rm could
    not delete either is an OSError: given to `onexc`, raised, or (ignore_errors) ignored."""
    how: dict = {}
    if onexc is not None:
        how = {"onexc": onexc} if sys.version_info >= (3, 12) else \
              {"onerror": lambda call, where, info: onexc(call, where, info[1])}
    try:
        shutil.rmtree(path, ignore_errors=ignore_errors, **how)
    except RecursionError:
        rm = subprocess.run(["rm", "-rf", "--", os.fspath(path)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True)
        if not os.path.lexists(path):
            return
        said = (rm.stderr.strip().splitlines() or ["it failed"])[-1]
        exc = OSError(errno.EIO, f"a tree too deep for Python, and rm -rf: {said}", os.fspath(path))
        if onexc is not None:
            onexc(None, os.fspath(path), exc)
        elif not ignore_errors:
            raise exc
