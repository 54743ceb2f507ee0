"""Two attempts that continue the same run cannot both be recorded as running: the check and the
insert are one transaction under a lock named for the run (state/resumes.py), on SQLite and
PostgreSQL alike, so two `fleet up --resume RUN` started at once lease one set of machines."""
from __future__ import annotations

import json
import threading

import pytest

from fleet.errors import UsageError
from fleet.state import open_state


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path, fleet_home):
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else \
        f"sqlite:///{tmp_path / 'state.db'}"


def _attempt(url: str, run_id: str, resumes: str | None) -> None:
    state = open_state(url)
    try:
        state.create_run(run_id, lease_id=None, project="p", user="u", command="c", log_path="l", output_dir="o",
                         meta={"resumed_from": resumes} if resumes else None)
    finally:
        state.close()


def test_only_one_of_many_concurrent_resumes_of_a_run_is_recorded(url):
    _attempt(url, "r-1", None)
    errors: list[BaseException] = []

    def resume(n: int) -> None:
        try:
            _attempt(url, f"r-1-try{n}", "r-1")
        except UsageError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=resume, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(errors) == 5 and all("r-1 is already being resumed, as run r-1-try" in str(e) for e in errors), errors
    state = open_state(url)
    try:
        from fleet.state.resumes import attempts_of
        assert len(attempts_of(state.db, "r-1")) == 1
        state.finish_run(attempts_of(state.db, "r-1")[0]["id"], "succeeded", 0)
    finally:
        state.close()
    _attempt(url, "r-1-later", "r-1")      # once that attempt ended, the state itself no longer refuses one


def test_an_attempt_whose_controller_died_mid_run_blocks_no_resume(url):
    """CI finding: a node-0 supervisor killed while starting attempt 2 left that row `running`, and a
    resume by hand after `fleet reap` ended the run was refused for ever. A running attempt blocks
    only while its controller is alive (or not provably dead)."""
    import subprocess
    from fleet.lost_runs import controller_identity
    dead = subprocess.Popen(["true"])
    dead.wait()
    ident = {**controller_identity(), "pid": dead.pid, "start": "1"}
    _attempt(url, "r-2", None)
    state = open_state(url)
    try:
        state.create_run("r-2-a2", lease_id=None, project="p", user="u", command="c", log_path="l",
                         output_dir="o", meta={"resumed_from": "r-2"})
        state.db.execute("UPDATE runs SET meta = ? WHERE id = ?",
                         (json.dumps({"resumed_from": "r-2", "controller": ident}), "r-2-a2"))
    finally:
        state.close()
    _attempt(url, "r-2-by-hand", "r-2")        # not refused: r-2-a2's controller is gone


def _lost_attempt(url: str, run_id: str, resumes: str) -> None:
    _attempt(url, run_id, resumes)
    state = open_state(url)
    try:
        state.finish_run(run_id, "lost", None)
    finally:
        state.close()


def test_a_resume_of_an_earlier_attempt_is_refused_while_a_later_one_of_the_chain_runs(url):
    """Red-team finding: recovery's R-a3 (which continues R-a2, which continues R) was running, and
    `fleet up --resume R` was accepted: two copies of one training billed at once. The check follows
    the whole chain."""
    _attempt(url, "r-3", None)
    _lost_attempt(url, "r-3-a2", "r-3")
    _attempt(url, "r-3-a3", "r-3-a2")          # recovery's next attempt, running (this process: alive)
    with pytest.raises(UsageError, match="r-3 is already being resumed, as run r-3-a3"):
        _attempt(url, "r-3-by-hand", "r-3")


def test_a_second_branch_of_a_runs_lineage_is_refused_while_one_runs(url):
    """R-a2 (lost) resumed as R-x, which runs: resuming R-a2 was allowed (it continues the attempt
    itself), but another resume of R would be a second copy of the same training. The check covers
    the run's whole lineage, under one lock for it."""
    _attempt(url, "r-4", None)
    _lost_attempt(url, "r-4-a2", "r-4")
    _attempt(url, "r-4-x", "r-4-a2")
    with pytest.raises(UsageError, match="r-4 is already being resumed, as run r-4-x"):
        _attempt(url, "r-4-y", "r-4")
