"""Whether a run left a mount under a directory fleet deletes is read from /proc/self/mountinfo. A
table that could not be read (out of descriptors: release stops 16 machines side by side, under
`ulimit -n`) was taken for "no mount", and the deletion then walked through a bound host directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_OUT_OF_DESCRIPTORS = """
import os, resource, sys
from fleet.remote.mounts import detach_mounts_under, mounts_under
held = len(os.listdir("/proc/self/fd")) - 1       # less the listing's own
resource.setrlimit(resource.RLIMIT_NOFILE, (held, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print(repr((mounts_under(sys.argv[1]), detach_mounts_under(sys.argv[1]))))
"""


def test_a_mount_table_that_cannot_be_read_is_not_no_mounts(tmp_path):
    d = tmp_path / "machine"
    d.mkdir()
    done = subprocess.run([sys.executable, "-c", _OUT_OF_DESCRIPTORS, str(d)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(([str(d)], [str(d)]))      # the directory stays: never walked into


def test_no_proc_at_all_is_still_no_mounts(tmp_path):
    from fleet.remote.mounts import mounts_under
    assert mounts_under(tmp_path, mountinfo=str(tmp_path / "no-proc" / "mountinfo")) == []
