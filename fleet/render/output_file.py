"""Writing a rendered report or schema where `-o PATH` says.

A regular file is written beside and renamed over, so an existing one is never left half-written;
an existing config or code file (fleet.toml, *.py, …) is refused, never replaced by a report.
Anything else that already exists is written into, never renamed over: `-o /dev/stdout` or a FIFO
is where the text is meant to go, and renaming over it as root replaced the device node itself
(`fleet report -o /dev/null` left a regular file as /dev/null) while a write that failed (/dev/full:
no space) still reported success.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

INPUT_SUFFIXES = (".toml", ".py", ".yaml", ".yml", ".cfg", ".ini")   # what an experiment reads: never replaced


def means_stdout(path) -> bool:
    """`-o -`: the usual spelling of standard output (it wrote a file named "-" in the directory)."""
    return path is not None and str(path) == "-"


def write_output(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write `text` to `path`; OSError (with errno and strerror) when it cannot be written."""
    path = Path(path).expanduser()
    try:
        st = os.stat(path)   # follows a symlink: /dev/stdout is one
    except FileNotFoundError:
        st = None
    if not path.name or (st is not None and stat.S_ISDIR(st.st_mode)):   # `-o .` or `-o /`
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if st is not None and stat.S_ISREG(st.st_mode) and (path.suffix in INPUT_SUFFIXES or path.name == "fleet.toml"):
        # `fleet config schema -o fleet.toml` replaced the experiment's config with the schema.
        raise FileExistsError(errno.EEXIST, "it exists and is an input (config or code), not an output: "
                                            "choose another name", str(path))
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL under an unpredictable name: in a directory others can write (/tmp), a name from the
    # pid alone could be a symlink planted to have the text written over one of the caller's files.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
