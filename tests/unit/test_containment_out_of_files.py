"""Out of open files, containment's reads raise instead of answering "gone": a release that read
EMFILE as "no process left" deleted a machine's directory while its processes ran on."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleet.providers.local import provider as local_provider

_EXHAUSTED = textwrap.dedent("""
    import errno, os, resource, sys
    from fleet.remote.agent import containment
    me = os.getpid()
    start = containment.start_time(me)
    state = sys.argv[1]
    containment.write_pid_file(state, me)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    answers = []
    for name, call in (("same_process", lambda: containment.same_process(me, start)),
                       ("alive", lambda: containment.alive(me)),
                       ("read_pid_file", lambda: containment.read_pid_file(state)),
                       ("tagged", lambda: containment.tagged("m-x")),
                       ("populated", lambda: containment.populated("/sys/fs/cgroup"))):
        try:
            answers.append(f"{name}={call()!r}")
        except OSError as exc:
            answers.append(f"{name}=raised {errno.errorcode[exc.errno]}")
    for fd in held:
        os.close(fd)
    print("; ".join(answers))
""")


def test_out_of_descriptors_is_no_answer_about_a_process(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _EXHAUSTED, str(tmp_path / "pid")], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 0, proc.stderr
    # A live process (this one), its own pid file: none may read as gone or absent.
    assert proc.stdout.strip().split("; ") == ["same_process=raised EMFILE", "alive=raised EMFILE",
                                               "read_pid_file=raised EMFILE", "tagged=raised EMFILE",
                                               "populated=raised EMFILE"]


def test_a_machine_whose_stop_fails_again_is_kept_and_the_others_are_still_released(tmp_path, monkeypatch):
    dirs = [tmp_path / f"l-x-n{rank}" for rank in range(3)]
    for d in dirs:
        (d / "root").mkdir(parents=True)
    tries: dict[str, int] = {}

    def end(d: Path) -> None:
        tries[d.name] = tries.get(d.name, 0) + 1
        if tries[d.name] == 1 or d.name == "l-x-n0":   # all short side by side; n0 short alone too
            raise OSError(24, "Too many open files")
        import shutil
        shutil.rmtree(d)

    monkeypatch.setattr(local_provider, "_end_machine_dir", end)
    with pytest.raises(OSError, match="Too many open files"):
        local_provider.LocalProvider()._release_dirs(dirs)
    # n1 and n2 released; n0, whose processes may still run, kept for a later release.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l-x-n0"]
    assert tries == {"l-x-n0": 2, "l-x-n1": 2, "l-x-n2": 2}


def test_the_watchdog_asks_again_when_out_of_descriptors_at_expiry_and_still_ends_the_machine(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from fleet.remote.agent import agent
    calls: list[str] = []

    def end_machine(machine_id, info, roots=(), grace_s=2.0):
        calls.append(machine_id)
        if len(calls) < 3:
            raise OSError(23, "Too many open files in system")
        return True

    monkeypatch.setattr(agent, "end_machine", end_machine)
    monkeypatch.setattr(agent.time, "sleep", lambda s: None)
    args = SimpleNamespace(state_dir=str(tmp_path), isolation_info={"level": "pids"}, machine_id="m-x",
                           poweroff=False, kill_pid=[], kill_pid_file=[])
    agent._expire(args, "deadline")   # raised out of the watchdog before: its machine never ended
    assert calls == ["m-x", "m-x", "m-x"]
    assert (tmp_path / "expired").is_file()
