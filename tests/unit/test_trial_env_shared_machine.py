"""A trial's environment reused from the pool's memory must not lie when two slots share a machine.

Trial A (slot 0) ends and its reset reads machine M's environment state, unchanged; trial B on
slot 1 of the same M is still running and `pip install`s a package after that read; trial C then
starts on slot 0. A probe at C's start would list the package; the remembered answer does not, and
M's last state (read before B's install) still matches it. C must probe (or reuse only what it
can prove): its record would otherwise say C ran without a package it ran with."""
from __future__ import annotations

import threading
from datetime import timedelta

from fleet.environment.model import GpuInfo, ImageRef, MachineEnvironment, Package, RunEnvironment
from fleet.models import Lease, Machine, utcnow
from fleet.run.machines import SSHMachines
from fleet.sweep.trial_env import TrialEnvironments, TrialMachines


def _env(*packages: str) -> RunEnvironment:
    me = MachineEnvironment(kind="t", machines=1, provider="local", template="t", instance_type="t",
                            lifecycle="host", image=ImageRef("host-os", "Debian"), kernel="Linux", os_release="Debian",
                            gpu=GpuInfo("simulated", 1, simulated=True), python="CPython 3.11.2",
                            packages=tuple(Package(p, "1.0", "0" * 64) for p in packages))
    return RunEnvironment(machines=(me,))


def _lease() -> Lease:
    now = utcnow()
    m = Machine(id="P-n0", lease_id="P", node_rank=0, host="127.0.0.1", port=1, user="u", key_path="k",
                host_key="h", workdir="/w", gpu_slots=(0,), instance_type="t")
    return Lease(id="P", provider="local", template="t", machines=[m], created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))


class Ctx:
    def __init__(self, run_id: str):
        self.run_id, self.hurry = run_id, threading.Event()


def test_a_trial_does_not_reuse_an_answer_while_another_trial_on_its_machine_may_have_changed_it(monkeypatch):
    machine_now = {"env": _env("numpy")}               # what a probe on M would answer now
    monkeypatch.setattr(SSHMachines, "capture_environment",
                        lambda self, ctx, lease, store, pinned: machine_now["env"])
    envs = TrialEnvironments()
    lease = _lease()
    # The pool's baseline: state S0 with its probe's answer (pool.py).
    envs.saw("P-n0", "S0")
    envs.learn(lease, _env("numpy"), {"P-n0": "S0"})

    # Trials A (slot 0) and B (slot 1) start on M: nothing changed, both reuse.
    for run in ("A", "B"):
        assert TrialMachines(envs).capture_environment(Ctx(run), lease, None, None) == _env("numpy")
    # A ends; its reset reads M's state: still S0 (B has not installed anything yet).
    token = envs.resetting("P-n0", "A")
    envs.saw("P-n0", "S0", token)
    # B, still running, installs a package: a probe would now see it.
    machine_now["env"] = _env("numpy", "evil")
    # C starts on slot 0 while B runs.
    got = TrialMachines(envs).capture_environment(Ctx("C"), lease, None, None)
    assert got == _env("numpy", "evil"), "C's record reused an answer from before B's pip install"


def test_a_machine_with_no_other_trial_running_reuses_the_answer(monkeypatch):
    probes = []
    monkeypatch.setattr(SSHMachines, "capture_environment",
                        lambda self, ctx, lease, store, pinned: probes.append(ctx.run_id) or _env("numpy"))
    envs = TrialEnvironments()
    lease = _lease()
    envs.saw("P-n0", "S0")
    envs.learn(lease, _env("numpy"), {"P-n0": "S0"})
    for run in ("A", "B", "C"):
        assert TrialMachines(envs).capture_environment(Ctx(run), lease, None, None) == _env("numpy")
        token = envs.resetting("P-n0", run)
        envs.saw("P-n0", "S0", token)
    assert probes == [] and envs.reused == 3
