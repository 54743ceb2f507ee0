"""The reaper resumes a run whose node 0 vanished: no controller lives to do it, so `fleet reap`,
which ends such a run `lost` (fleet/run/reap_silent.py: AWS, team hosts, Slurm), starts its next
attempt itself, when the run's own settings allow it, as `fleet up --resume RUN -d` would start one:
on a new lease made from the reaping computer (on team hosts, with the keys to the hosts it has).

The rules are recovery's (fleet/run/recovery.py, asked, not copied): `recovery = "always"`, or
"spot" when the lost node 0 was a spot machine; max_restarts not used up by the attempts so far;
a budget the earlier attempts left that the budget gate finds can pay the plan. The attempt is the
same run's next (`<run>-aN`, every earlier attempt listed in its summary and record, the lost
attempt naming it for `fleet attach` and `fleet logs -f`), started from what the run recorded:
its fleet.toml and data as pinned (the code snapshot in the store), its command-line settings
(the lease's `relaunch` meta, remote_supervisor.relaunch_meta), each node's latest checkpoint; and it is
supervised where the lost attempt's was, by capability: from node 0 of its new lease
(SupervisesFromNode0: node_launch.launch_on_node0), or from the cluster's login node, which leases
it (SupervisesFromLoginNode, Slurm: login_launch.launch_on_login_node); the laptop free to close.

A run of another user (`fleet reap --all-users`) is only ended: its next attempt would be leased
in the caller's name and on the caller's credentials, so its owner resumes it."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import BudgetRefused, FleetError, NotFound, UsageError
from ..state.documents import stored_object
from .checkpoints import Resume, latest_snapshots
from .handed_lease import LOGIN_NODE, NODE_0
from .resume_attempt import resume_of
from .supervisor_beat import base_run_id


@dataclass(frozen=True)
class LostRunResume:
    """What the reaper did (or, with --dry-run, would do) about one run it ended lost."""

    run_id: str                    # the lost attempt
    resumed: bool
    reason: str = ""               # why it was not resumed
    attempt: int | None = None     # the next attempt's number
    next_run_id: str | None = None
    lease_id: str | None = None    # the next attempt's lease
    supervisor_pid: int | None = None
    dry_run: bool = False
    supervised_on: str = NODE_0  # where the next attempt's supervisor runs: node 0 of its lease, or the login node

    def _where(self) -> str:
        return "the cluster's login node" if self.supervised_on == LOGIN_NODE else "node 0 of a new lease"

    def _where_resumed(self) -> str:
        return "the cluster's login node" if self.supervised_on == LOGIN_NODE else "its node 0"

    def line(self) -> str:
        base = base_run_id(self.run_id)
        if self.resumed and self.dry_run:
            return (f"would resume run {base} as attempt {self.attempt} ({self.next_run_id}) from its checkpoints, "
                    f"supervised from {self._where()}")
        if self.resumed:
            return (f"resumed run {base} as attempt {self.attempt} ({self.next_run_id}) on lease {self.lease_id} "
                    f"from its checkpoints, supervised from {self._where_resumed()}: "
                    f"follow it with `fleet attach {base}`")
        verb = "would stay" if self.dry_run else "stays"
        return f"run {self.run_id} {verb} lost, not resumed: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "resumed": self.resumed, "attempt": self.attempt,
               "next_run_id": self.next_run_id, "lease_id": self.lease_id, "supervisor_pid": self.supervisor_pid,
               "reason": self.reason or None,   # where the next attempt runs: listed only when not node 0
               "supervised_on": self.supervised_on if self.resumed and self.supervised_on != NODE_0 else None}
        return {k: v for k, v in out.items() if v is not None}


class _NotResumed(Exception):
    pass


def attempt_of(run_id: str) -> int:
    from ..ids import split_attempt
    return split_attempt(run_id)[1]


def continued_resume(state, store, lost_run_id: str) -> Resume:
    """The next attempt of the same run after `lost_run_id`: every earlier attempt as recovery lists
    them, and each node's latest checkpoint (a node without one in the last attempt keeps its
    earlier one)."""
    base, last = base_run_id(lost_run_id), attempt_of(lost_run_id)
    rows: list[dict[str, Any]] = []
    snapshots: dict[int, str] = {}
    for k in range(1, last + 1):
        run_id = base if k == 1 else f"{base}-a{k}"
        try:
            row = state.get_run(run_id)
        except NotFound:
            continue
        summary = (row.get("meta") or {}).get("summary") or {}
        rows.append({"attempt": k, "run_id": run_id, "lease_id": row.get("lease_id"), "status": row["status"],
                     "exit_code": summary.get("exit_code"), "started_at": summary.get("started_at"),
                     "ended_at": summary.get("ended_at"), "cost_usd": summary.get("cost_usd"),
                     "machines_lost": row["status"] == "lost" or bool(summary.get("machines_lost")),
                     "message": summary.get("message")})
        ranks = sorted(int(r) for r in (summary.get("checkpoints") or {}))
        snapshots.update(latest_snapshots(store, run_id, ranks or list(range(int(summary.get("machines") or 1)))))
    if not snapshots:
        raise UsageError(f"run {lost_run_id} left no checkpoint to resume from",
                         hint="write the checkpoint into $FLEET_CHECKPOINT_DIR (docs/managed-runs.md)")
    return Resume(attempt=last + 1, snapshots=snapshots, of_run=lost_run_id, previous=tuple(rows))


def resume_for(config, run_id: str, *, continues: bool) -> Resume:
    """The Resume a detached supervisor starts from: `fleet up --resume RUN`'s, or the reaper's."""
    from ..snapshots import open_store
    from ..state import open_state
    state, store = open_state(config.state_url), open_store(config.store)
    return continued_resume(state, store, run_id) if continues else \
        resume_of(state, store, run_id, config.user, check_owner=False)     # its launcher checked the owner


def resume_lost_runs(state, runs: list[dict[str, Any]], *, caller: str, state_url: str | None, dry_run: bool,
                     events) -> list[LostRunResume]:
    """For each run the reaper ended lost (or, dry, would end): resume it, or say why not."""
    from .context import SilentEvents
    events = events or SilentEvents()
    out = []
    for run in runs:
        try:
            out.append(_resume_one(state, run, caller=caller, state_url=state_url, dry_run=dry_run, events=events))
        except _NotResumed as exc:
            out.append(LostRunResume(run["id"], False, reason=str(exc), dry_run=dry_run))
    return out


def _resume_one(state, run: dict[str, Any], *, caller: str, state_url: str | None, dry_run: bool,
                events) -> LostRunResume:
    from .recovery import budget_left, mode_refusal, prior_spent, restarts_refusal
    owner = run.get("owner") or "unknown"
    if owner != caller:
        raise _NotResumed(f"a run of user {owner}: `fleet reap --all-users` only ends other users' runs "
                          f"(its owner resumes it with `fleet up --resume {run['id']} -d`)")
    meta = run.get("meta") or {}
    lease = state.get_lease(run["lease_id"])
    node0 = next((m for m in lease.machines if m.id == meta.get("supervised_on")), None)
    where = _where_next(lease.provider, meta.get("supervised_on"), node0)
    if where is None:
        raise _NotResumed("its supervisor was neither on node 0 of its lease nor on its cluster's login node "
                          f"(the reaper resumes only those): `fleet up --resume {run['id']} -d` resumes it")
    workdir = Path(tempfile.mkdtemp(prefix="fleet-resume-"))
    try:
        config, pins, overrides = _run_config(run, lease, workdir, state_url)
        why = mode_refusal(config, spot_lost=bool(node0 is not None and node0.spot))
        if why:
            raise _NotResumed(why)
        from ..snapshots import open_store
        try:
            resume = continued_resume(state, open_store(config.store), run["id"])
        except FleetError as exc:
            raise _NotResumed(exc.one_line()) from None
        why = restarts_refusal(config, len(resume.previous))
        if why:
            raise _NotResumed(why)
        try:
            left = budget_left(config, prior_spent(resume), len(resume.previous))
        except BudgetRefused as exc:
            raise _NotResumed(f"the budget cannot pay a restart: {exc.one_line()}") from None
        from .login_launch import why_not_login_node
        from .node_launch import why_not_node0
        from .types import RunOptions
        base = base_run_id(run["id"])
        options = RunOptions(run_id=base, detached=True, resume=resume)
        why = (why_not_login_node if where == LOGIN_NODE else why_not_node0)(config, options)
        if why:
            raise _NotResumed(f"its next attempt cannot be supervised from {where}: {why}")
        found = LostRunResume(run["id"], True, attempt=resume.attempt, next_run_id=f"{base}-a{resume.attempt}",
                              dry_run=dry_run, supervised_on=where)
        if dry_run:
            return found
        return _launch(state, config, run, pins, overrides, options, left, found, events)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _where_next(provider: str, supervised_on: str | None, node0) -> str | None:
    """Where the next attempt's supervisor goes, as `fleet up --resume RUN -d` would put it: on the
    cluster's login node when the lost one ran there (SupervisesFromLoginNode), else on node 0 of
    a new lease (SupervisesFromNode0); None: the reaper does not resume this run."""
    from ..providers.capabilities import SupervisesFromLoginNode, SupervisesFromNode0
    from ..providers.registry import provider_class
    try:
        cls = provider_class(provider)
    except FleetError:
        return None
    if supervised_on == LOGIN_NODE and issubclass(cls, SupervisesFromLoginNode):
        return LOGIN_NODE
    if node0 is not None and issubclass(cls, SupervisesFromNode0):
        return "node 0"
    return None


def _launch(state, config, run, pins, overrides, options, left, found: LostRunResume, events) -> LostRunResume:
    from .login_launch import launch_on_login_node
    from .node_launch import launch_on_node0
    from .recovery import _link
    from .supervisor import SupervisorSpec
    spec = SupervisorSpec(run_id=options.run_id, cwd="", overrides=overrides, resume=run["id"], continues=True)
    gate = config if left is None else replace(config, budget=left)   # what the earlier attempts left
    token = f"{found.next_run_id} {uuid.uuid4().hex} {int(time.time())}"
    if not _mark(state, run["id"], None, token) and not _take_over_stale_mark(state, run["id"], token):
        raise _NotResumed("another `fleet reap` is resuming it")
    try:
        launch = launch_on_login_node if found.supervised_on == LOGIN_NODE else launch_on_node0
        handoff, pid = launch(gate, spec, options, events, pins=pins)
        if handoff.summary is not None:   # it ended before staging was done (no machines, …)
            raise _NotResumed(f"attempt {found.attempt} ended before it started: "
                              f"{handoff.summary.message or handoff.summary.status}")
    except BaseException as exc:
        _mark(state, run["id"], token, None)   # not resumed: a later `fleet reap` may try again
        if isinstance(exc, BudgetRefused):
            raise _NotResumed(f"the budget cannot pay a restart: {exc.one_line()}") from None
        if isinstance(exc, FleetError):
            raise _NotResumed(f"attempt {found.attempt} could not be started: {exc.one_line()}") from None
        raise
    _link(run["id"], found.next_run_id, config)   # `fleet attach RUN` follows it into this attempt
    return replace(found, lease_id=_attempt_lease(state, found.next_run_id) or handoff.lease_id, supervisor_pid=pid)


def _attempt_lease(state, run_id: str) -> str | None:
    """The lease the next attempt's own row names: a login-node supervisor leases it itself, and
    the handoff (which names the run by its first id) does not know it."""
    try:
        return state.get_run(run_id).get("lease_id")
    except NotFound:
        return None


# A reaper killed while it launched the next attempt leaves its mark. Past the longest a launch may
# take (the handoff follows staging for up to an hour) with no run of the attempt it names in the
# state, the mark is its reaper's leftover and another reaper may take the run over; where that
# attempt's run exists, it was started and is followed like any run, so the mark stays.
STALE_MARK_S = 3600 + 600


def _take_over_stale_mark(state, run_id: str, token: str, *, now: float | None = None) -> bool:
    rows = state.db.execute("SELECT meta FROM runs WHERE id = ?", (run_id,))
    if not rows:
        return False
    old = stored_object(rows[0]["meta"], f"run {run_id}'s meta").get("resuming")
    if not isinstance(old, str):
        return False
    fields = old.split(" ")
    stamp = fields[2] if len(fields) == 3 else ""
    if not stamp.isdigit() or (now if now is not None else time.time()) - int(stamp) < STALE_MARK_S:
        return False
    try:
        state.get_run(fields[0])
        return False                  # that attempt was started: never a second one
    except NotFound:
        pass
    return _mark(state, run_id, old, token)


def _mark(state, run_id: str, expected: str | None, token: str | None) -> bool:
    """Compare and set the lost run's `resuming` mark: one `fleet reap` of several at once starts
    its next attempt. The UPDATE names the meta it read, so of two at once only one matches."""
    rows = state.db.execute("SELECT status, meta FROM runs WHERE id = ?", (run_id,))
    if not rows:
        return False
    text = rows[0]["meta"] or "{}"
    meta = stored_object(text, f"run {run_id}'s meta")
    if meta.get("resuming") != expected or (expected is None and meta.get("next_attempt")):
        return False
    meta = {k: v for k, v in meta.items() if k != "resuming"}
    if token is not None:
        meta["resuming"] = token
    state.db.execute("UPDATE runs SET meta = ? WHERE id = ? AND meta = ?", (json.dumps(meta), run_id, text))
    again = stored_object(state.db.execute("SELECT meta FROM runs WHERE id = ?", (run_id,))[0]["meta"],
                          f"run {run_id}'s meta")
    return again.get("resuming") == token


def _run_config(run: dict[str, Any], lease, workdir: Path, state_url: str | None):
    """The run's own Config, from what it recorded: its fleet.toml as pinned with its code (a
    dirty tree's overlay first), and its command-line settings; with those settings (for node 0)."""
    from ..config.loader import load_config
    from ..snapshots import open_store
    from .types import PinnedInputs
    relaunch = (lease.meta or {}).get("relaunch")
    if not isinstance(relaunch, dict) or not relaunch:
        raise _NotResumed("its lease recorded no launch settings (started by an older fleet); "
                          f"`fleet up --resume {run['id']} -d` resumes it")
    if relaunch.get("env"):
        raise _NotResumed("it was started with --env/--env-file values, which are never recorded (they may be "
                          f"secret); `fleet up --resume {run['id']} -d` with them resumes it")
    recorded = (run.get("meta") or {}).get("pins") or {}
    pins = PinnedInputs(code_commit=recorded.get("code_commit"), code_snapshot=recorded.get("code_snapshot"),
                        code_dirty_snapshot=recorded.get("code_dirty_snapshot"),
                        code_subdir=recorded.get("code_subdir") or "",
                        data_snapshots=dict(recorded.get("data_snapshots") or {}), store_url=recorded.get("store") or "")
    from .launch_seal import why_unsealed
    from .lease import pins_meta
    command = run.get("command") or ""
    try:
        why = why_unsealed(base_run_id(run["id"]), lease.provider, relaunch, pins_meta(pins), command)
    except FleetError as exc:     # this computer's key is unusable: no run can be proved ours
        raise _NotResumed(exc.one_line()) from None
    if why:       # a row others could have written decides where your credentials go: only your own launches
        raise _NotResumed(f"{why}; `fleet up --resume {run['id']} -d` resumes it")
    rel = relaunch.get("config_file")
    if not pins.pinned or not pins.store_url or not rel:
        raise _NotResumed("its fleet.toml is not part of its pinned code")
    try:
        text = _pinned_file(open_store(pins.store_url), pins, rel)
    except FleetError as exc:
        raise _NotResumed(f"its pinned fleet.toml cannot be read: {exc.one_line()}") from None
    path = workdir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    overrides = dict(relaunch.get("overrides") or {})
    if relaunch.get("command"):
        overrides["command"] = command
    try:
        config = load_config(path, cwd=workdir, overrides={**overrides, **({"state_url": state_url} if state_url else {})})
        return config, pins, overrides
    except FleetError as exc:
        raise _NotResumed(f"its recorded settings no longer load: {exc.one_line()}") from None


def _pinned_file(store, pins, rel: str) -> bytes:
    from ..snapshots.manifest import Manifest
    for sid in (pins.code_dirty_snapshot, pins.code_snapshot):
        if not sid:
            continue
        manifest = Manifest.from_bytes(store.get_manifest(sid), sid)
        if rel in manifest.deleted:
            break
        entry = manifest.by_path().get(rel)
        if entry is not None and entry.type == "file":
            return b"".join(store.get_chunk(h) for h, _ in entry.chunks)
    raise NotFound(f"{rel} is not in the pinned code")
