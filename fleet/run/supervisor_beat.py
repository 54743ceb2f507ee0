"""A detached run's supervisor says, in the state, that it is alive; readers anywhere tell when it
stopped saying so.

A supervisor that dies (SIGKILL, OOM, a bug) never reaches its finally-block: its run row says
`running` for ever. On its own computer fleet proves that from /proc (fleet/lost_runs.py
`controller_alive`); anywhere else — a teammate's computer sharing the PostgreSQL state, or the
laptop of a run supervised from node 0 of its AWS lease — only the state can say. So every
supervisor rewrites one `supervisor_beats` row every `period_s` (default 10 s) with the state's own
clock (the database server's: no two computers' clocks are compared), and a run whose supervisor
has not written for STALE_BEATS periods is treated as gone by `fleet status`, `fleet logs -f`,
`fleet attach`, `fleet down` and `fleet reap` (which end it as `lost` once its lease is released).

Imports nothing at module level: `fleet status` asks it.
"""
from __future__ import annotations

import os

BEAT_S = 10.0
ENV_BEAT_S = "FLEET_SUPERVISOR_BEAT_S"   # tests beat faster
STALE_BEATS = 6                         # periods without a beat before a supervisor is called gone

_NOW = {   # seconds since 1970 by the database's own clock
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
}


def base_run_id(run_id: str) -> str:
    """The run a supervisor was started for: its later attempts (`<run>-aN`) share its beat."""
    from ..ids import split_attempt
    return split_attempt(run_id)[0]


def beat_period_s() -> float:
    try:
        value = float(os.environ.get(ENV_BEAT_S) or BEAT_S)
    except ValueError:
        return BEAT_S
    return max(0.2, value) if value < float("inf") else BEAT_S   # nan: max gives 0.2; inf: never a beat


class SupervisorBeat:
    """The supervisor's half: one row, rewritten from a daemon thread until `stop()` deletes it."""

    def __init__(self, state, run_id: str, *, period_s: float | None = None):
        import socket
        import threading
        self.state, self.run_id = state, base_run_id(run_id)
        self.period_s = period_s or beat_period_s()
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"fleet-beat-{self.run_id}", daemon=True)

    def start(self) -> "SupervisorBeat":
        self._write()   # the row exists before the launcher hands the run over
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ended on its own: the row goes, so nobody mistakes the finished supervisor for a dead one."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        try:
            self.state.db.execute("DELETE FROM supervisor_beats WHERE run_id = ?", (self.run_id,))
        except Exception:  # noqa: BLE001 — the run's own row says it ended; a stale beat of it is ignored
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self._write()

    def _write(self) -> None:
        now = _NOW[self.state.db.dialect]
        try:
            self.state.db.execute(
                "INSERT INTO supervisor_beats (run_id, host, pid, period_s, beat_epoch) "
                f"VALUES (?, ?, ?, ?, {now}) ON CONFLICT (run_id) DO UPDATE SET host = excluded.host, "
                "pid = excluded.pid, period_s = excluded.period_s, beat_epoch = excluded.beat_epoch",
                (self.run_id, self._host, self._pid, float(self.period_s)))
        except Exception:  # noqa: BLE001 — the run goes on; a state unreachable for long reads as gone
            pass


def beat_ages(state, run_ids) -> dict[str, tuple[float, float, str, int]]:
    """{base run id: (seconds since its last beat, its period, host, pid)} for those that beat."""
    bases = sorted({base_run_id(r) for r in run_ids})
    if not bases:
        return {}
    marks = ", ".join("?" for _ in bases)
    try:
        rows = state.db.execute(
            f"SELECT run_id, host, pid, period_s, {_NOW[state.db.dialect]} - beat_epoch AS age "
            f"FROM supervisor_beats WHERE run_id IN ({marks})", bases)
    except Exception:  # noqa: BLE001 — a state from before the table: nobody beats there
        return {}
    return {r["run_id"]: (float(r["age"]), float(r["period_s"]), r["host"], int(r["pid"])) for r in rows}


def stale_reason(beat: tuple[float, float, str, int] | None) -> str | None:
    if beat is None:
        return None
    age, period, host, pid = beat
    if age <= STALE_BEATS * period:
        return None
    return f"its supervisor (pid {pid} on {host}) has not been heard from for {age:.0f} s"


def supervisor_gone(state, run: dict) -> str | None:
    """Why a detached run still marked running has no supervisor any more: provably (its process,
    on this computer, is gone) or by its silence (no beat for STALE_BEATS periods). None while it
    lives, when nobody can tell (a supervisor from before beats), or when the run has ended."""
    if run.get("status") != "running":
        return None
    reason = supervisor_silent(state, run)
    if reason is None:
        return None
    # It may have finished its run just before it exited: only a run still running lost it.
    return reason if state.get_run(run["id"])["status"] == "running" else None


def supervisor_silent(state, run: dict) -> str | None:
    """Why a detached run's supervisor is gone, whatever the run's own status (an attempt that
    named its next one, which the supervisor never started); None while it lives or nobody can tell."""
    meta = run.get("meta") or {}
    if not meta.get("detached"):
        return None
    from ..lost_runs import controller_alive
    ident = meta.get("controller") or {}
    alive = controller_alive(ident)
    if alive and _stopped(ident.get("pid")):      # SIGSTOPped: alive, yet nothing it does goes on
        stale = stale_reason(beat_ages(state, [run["id"]]).get(base_run_id(run["id"])))
        return f"{stale}; it is stopped (SIGSTOP)" if stale else None
    if alive:
        return None
    if alive is False:
        return f"its supervisor (pid {ident.get('pid')} on {ident.get('host')}) is gone"
    return stale_reason(beat_ages(state, [run["id"]]).get(base_run_id(run["id"])))


def _stopped(pid) -> bool:
    """The process is stopped (state T or t in /proc): a live pid whose beat has gone silent for it
    was followed for ever by `fleet attach` and waited on by `fleet down`."""
    from ..lost_runs import stat_fields
    try:
        return stat_fields(int(pid))[:1] in (["T"], ["t"])
    except (ValueError, TypeError):
        return False


__all__ = ["SupervisorBeat", "supervisor_gone", "supervisor_silent", "beat_ages", "stale_reason", "base_run_id", "STALE_BEATS"]
