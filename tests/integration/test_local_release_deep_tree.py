"""A local machine whose job left a directory tree deeper than Python's stack (a `cp -r . sub/` run in
a loop, a runaway recursive unpack) is still released: shutil.rmtree recurses once per level, so
every `fleet down` of that lease failed on "RecursionError: maximum recursion depth exceeded", the
directory and its disk never freed and the lease never released."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fleet.providers.local import LocalProvider


def _deep_tree(top: Path, depth: int) -> None:
    """`depth` nested directories under `top`, made by descriptor (the path soon passes PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("left-by-the-job", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as fh:
            fh.write("x")
    finally:
        os.close(fd)


def test_a_tree_deeper_than_the_stack_is_deleted_at_release(local_lease):
    lease = local_lease()
    d = Path(lease.machines[0].provider_ref["dir"])
    _deep_tree(d / "root", 1500)
    try:
        LocalProvider().release(lease)
        assert not d.exists(), "the machine's directory was left behind"
    finally:   # pytest's own clean-up of old temporary directories is a recursive delete too
        subprocess.run(["rm", "-rf", "--", str(d)], check=False)
