"""On kernels before 5.14 a machine's cgroup is ended by freezing it and killing each pid members()
lists. os.walk skips a directory it cannot list, and a cgroup.procs that could not be read was
empty: either read as "no process there", so the kill missed that cgroup's processes. Now they
raise (the watchdog asks again, a release keeps the machine for a later one); only a cgroup removed
meanwhile, which the kernel allows once it is empty, reads as holding none."""
from __future__ import annotations

import errno
import os

import pytest

from fleet.remote.agent import containment as c


def _unit(tmp_path):
    """A cgroup tree as the kernel shows it before 5.14 (no cgroup.kill), frozen at once."""
    unit = tmp_path / "unit"
    (unit / "work" / "job").mkdir(parents=True)
    (unit / "work" / "cgroup.procs").write_text("4242\n")
    (unit / "work" / "job" / "cgroup.procs").write_text("")
    (unit / "cgroup.procs").write_text("")
    (unit / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    (unit / "cgroup.freeze").write_text("0")
    return unit


def _cannot_list(monkeypatch, name: str, code: int) -> None:
    real = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == name:
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO, errno.EMFILE])
def test_a_cgroup_that_cannot_be_listed_is_no_answer_and_the_kill_raises(tmp_path, monkeypatch, code):
    unit = _unit(tmp_path)
    _cannot_list(monkeypatch, "job", code)
    with pytest.raises(OSError) as raised:
        c.members(str(unit))
    assert raised.value.errno == code
    killed: list[int] = []
    monkeypatch.setattr(c.os, "kill", lambda pid, sig: killed.append(pid))
    with pytest.raises(OSError):
        c.kill_unit(str(unit), timeout=2)
    assert (unit / "cgroup.freeze").read_text() == "0" and killed == []   # thawed; nothing half-judged
    # A cgroup removed while it was walked held no process: the others' members still count.
    _cannot_list(monkeypatch, "job", errno.ENOENT)
    assert c.members(str(unit)) == [4242]


def test_a_cgroup_procs_that_cannot_be_read_is_no_answer(tmp_path):
    unit = _unit(tmp_path)
    procs = unit / "work" / "job" / "cgroup.procs"
    procs.unlink()
    procs.symlink_to(procs.name)            # its read fails (ELOOP), as root too: not "empty"
    with pytest.raises(OSError) as raised:
        c.members(str(unit))
    assert raised.value.errno == errno.ELOOP
