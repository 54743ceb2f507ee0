"""Every machine-second of a kept lease is billed exactly once: the run's segments until the run
ends, then a kept segment ("kept, idle") until `fleet down`, a `fleet run LEASE` (billed as that
run), or the lease's deadline when nobody came back (settled by the next `fleet` command).

Bounds come from timestamps taken around the commands, never from sleeps, so a loaded machine
only widens them."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from fleet.money.ledger import KEPT_SUFFIX, Ledger, parse_iso
from fleet.state import open_state
from tests.conftest import run_fleet


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _up_kept(experiment, keep: str, *command: str) -> dict:
    proc = run_fleet(["up", "--keep", keep, "--json", "--", *(command or ("true",))], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kept_until"], summary
    return summary


def _entries(lease_id: str):
    state = open_state()
    try:
        read = Ledger(state.db).read(lease_id=lease_id)
        assert not read.corrupt
        return read.entries
    finally:
        state.close()


def _segments(entries) -> dict[str, tuple[datetime, datetime, str | None, bool]]:
    """segment → (start, end, run_id, closed)."""
    out: dict[str, list] = {}
    for e in sorted(entries, key=lambda e: e.seq):
        seg = out.setdefault(e.segment_id, [parse_iso(e.start_at), parse_iso(e.end_at), e.run_id, False])
        seg[1] = max(seg[1], parse_iso(e.end_at))
        seg[3] = seg[3] or e.kind == "close"
    return {k: tuple(v) for k, v in out.items()}


def _assert_no_overlap_no_gap(entries) -> list[tuple[datetime, datetime, str | None, str]]:
    """Per machine, segments in time order touch end to start: nothing billed twice, nothing missed."""
    by_machine: dict[str, list] = {}
    for seg_id, (start, end, run_id, closed) in _segments(entries).items():
        assert closed, f"segment {seg_id} left open"
        machine = next(e.machine_id for e in entries if e.segment_id == seg_id)
        by_machine.setdefault(machine, []).append((start, end, run_id, seg_id))
    for machine, segs in by_machine.items():
        segs.sort()
        for (s0, e0, _, a), (s1, e1, _, b) in zip(segs, segs[1:]):
            assert e0 == s1, f"{machine}: {a} ends {e0}, {b} starts {s1} (gap or overlap)"
    return [s for segs in by_machine.values() for s in segs]


def _billed_s(entries) -> float:
    return sum(e.duration_ms for e in entries) / 1000


def _wait(predicate, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.25)


def test_a_kept_lease_is_billed_until_fleet_down(experiment, fleet_home):
    before_up = _now()
    kept = _up_kept(experiment, "5m")
    after_up = _now()
    _wait(lambda: (_now() - after_up).total_seconds() >= 6)
    before_down = _now()
    proc = run_fleet(["down", kept["lease_id"]], cwd=experiment)
    after_down = _now()
    assert proc.returncode == 0, proc.stderr

    entries = _entries(kept["lease_id"])
    billed = _billed_s(entries)
    lower = (before_down - after_up).total_seconds()      # it surely lived at least this long
    upper = (after_down - before_up).total_seconds()
    assert lower <= billed <= upper, (lower, billed, upper)
    segs = _assert_no_overlap_no_gap(entries)
    assert any(seg_id.endswith(KEPT_SUFFIX) and run_id is None for *_, run_id, seg_id in segs)

    report = run_fleet(["report", "--by", "run", "--json"], cwd=experiment)
    assert report.returncode == 0, report.stderr
    assert f"(lease {kept['lease_id']}, kept, idle)" in report.stdout


def test_a_run_on_the_kept_lease_bills_its_time_as_the_run_and_the_rest_as_kept(experiment, fleet_home):
    kept = _up_kept(experiment, "5m")
    lease_id = kept["lease_id"]
    proc = run_fleet(["run", lease_id, "--json", "--", "sh", "-c", "sleep 1"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    proc = run_fleet(["down", lease_id], cwd=experiment)
    assert proc.returncode == 0, proc.stderr

    segs = _assert_no_overlap_no_gap(_entries(lease_id))
    kinds = [("kept" if seg_id.endswith(KEPT_SUFFIX) else run_id) for _, _, run_id, seg_id in sorted(segs)]
    assert kinds == [kept["run_id"], "kept", again["run_id"], "kept"], kinds
    [(start, end)] = [(s, e) for s, e, run_id, _ in segs if run_id == again["run_id"]]
    assert (end - start).total_seconds() >= 1.0   # its `sleep 1` is the run's, not the kept lease's


def test_a_kept_lease_that_expires_is_billed_to_its_deadline_by_the_next_command(experiment, fleet_home):
    with open(experiment / "fleet.toml", "a") as f:
        f.write('\n[lease]\nheartbeat_ttl = "5s"\n')   # the machines' deadline is then the --keep one
    kept = _up_kept(experiment, "4s")
    lease_id = kept["lease_id"]
    deadline = parse_iso(kept["kept_until"])
    try:
        _wait(lambda: (_now() - deadline).total_seconds() >= 2)   # well past it: 'now' must not be billed
        proc = run_fleet(["status", "--json"], cwd=experiment)   # any command settles it
        assert proc.returncode == 0, proc.stderr
        entries = _entries(lease_id)
    finally:
        run_fleet(["down", lease_id], cwd=experiment)

    segs = _assert_no_overlap_no_gap(entries)
    last_end = max(e for _, e, _, _ in segs)
    assert abs((last_end - deadline).total_seconds()) < 1.0, (last_end, deadline)
    # The `fleet down` afterwards added nothing: the machines ended at the deadline.
    assert _billed_s(_entries(lease_id)) == _billed_s(entries)


def test_keep_never_outlives_what_the_budget_can_pay(experiment, fleet_home):
    with open(experiment / "fleet.toml", "a") as f:
        f.write('\n[prices]\n"local-1gpu" = 36\n')     # $0.01 per second: $0.50 pays for about 50 s
    before = _now()
    proc = run_fleet(["up", "--keep", "1h", "--budget", "0.5", "--json", "--", "true"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    try:
        assert "--keep capped at" in proc.stderr, proc.stderr
        assert parse_iso(summary["kept_until"]) <= before + timedelta(seconds=60), summary["kept_until"]
    finally:
        run_fleet(["down", summary["lease_id"]], cwd=experiment)
