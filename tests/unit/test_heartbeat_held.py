"""A lease whose Slurm job is suspended keeps its run past the heartbeat TTL: no beat reaches the
stopped machines, and the heartbeat counted them past their deadline, so the run gave up on them
("stopped answering and has passed its deadline") while Slurm kept them, and their watchdogs,
stopped too, were waiting to be beaten again at the resume (agent/wakes.py)."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from fleet import heartbeat as heartbeat_module
from fleet.heartbeat import Heartbeat
from fleet.models import Lease, Machine, utcnow
from fleet.run.lease import _watch

TTL_S = 60


def _lease() -> Lease:
    now = utcnow()
    machines = [Machine(id=f"L-n{i}", lease_id="L", node_rank=i, host="127.0.0.1", port=1, user="u",
                        key_path="k", host_key="h", workdir="/w", gpu_slots=(0,)) for i in range(2)]
    return Lease(id="L", provider="slurm", template="t", machines=machines, created_at=now,
                 deadline=now + timedelta(seconds=TTL_S), max_deadline=now + timedelta(hours=1))


def _clock(monkeypatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(heartbeat_module, "elapsed", lambda: now[0])
    return now


def _run_watch(beat: Heartbeat):
    phases = []
    ctx = SimpleNamespace(heartbeat=beat, cancel=None, options=SimpleNamespace(queue_wait_s=None),
                          events=SimpleNamespace(phase=lambda name, message: phases.append(name)),
                          request_stop=lambda *a: None)
    return _watch(ctx), phases


def test_a_suspension_longer_than_the_ttl_does_not_lose_the_machines(monkeypatch):
    now = _clock(monkeypatch)
    beat = Heartbeat(_lease(), TTL_S)
    watch, phases = _run_watch(beat)
    watch.on_suspended("Slurm suspended job 123")
    now[0] += 10 * TTL_S          # no beat got through all this while
    assert beat.lost() == set(), "the machines of a suspended job counted as lost"
    watch.on_resumed("Slurm resumed job 123")
    now[0] += TTL_S / 2           # the first beats after the resume are on their way
    assert beat.lost() == set(), "the machines counted as lost at once after the resume"
    assert phases == ["suspended", "run"]
    now[0] += TTL_S / 2 + 5       # and no beat reached them within a TTL of the resume: their watchdogs ended them
    assert beat.lost() == {"L-n0", "L-n1"}

