"""`fleet up --resume RUN`: which attempt comes next, from which checkpoints (checkpoints.py restores
them), and the checks that refuse a resume before anything is leased."""
from __future__ import annotations

from .checkpoints import Resume, latest_snapshots


def resume_of(state, store, run_id: str, user: str | None = None, *, check_owner: bool = True) -> Resume:
    """`fleet up --resume RUN`: the next attempt of RUN, starting from each node's latest checkpoint.
    Only its owner's (`user`: the config's), and only the latest attempt that left a checkpoint.
    `check_owner=False`: a detached run's supervisor, whose launcher checked it (on node 0 it runs as
    another login, with no FLEET_USER of the laptop's)."""
    from ..errors import UsageError
    from ..plan import current_user
    from ..state.resumes import attempts_of, is_live
    run = state.get_run(run_id)
    summary = (run.get("meta") or {}).get("summary") or {}
    if run["status"] == "running":
        raise UsageError(f"run {run['id']} is still running", hint=f"`fleet attach {run['id']}`, or `fleet down` it first")
    me = current_user(user)
    owner = run.get("owner")
    if check_owner and (not isinstance(owner, str) or not owner.strip()):   # a damaged row is no one's
        raise UsageError(f"run {run['id']} has no owner recorded: not allowed to resume it",
                         hint="start it afresh with `fleet up`")
    if check_owner and owner != me:
        raise UsageError(f"run {run['id']} is {run['owner']}'s, not {me}'s: its owner resumes it",
                         hint="if it is yours under another name, set FLEET_USER to it")
    for later in attempts_of(state.db, run["id"]):
        if later["status"] == "running":
            if not is_live(state, later):   # killed mid-run (its controller provably gone): not a resume under way
                continue
            raise UsageError(f"run {run['id']} is already being resumed, as run {later['id']}",
                             hint=f"`fleet attach {later['id']}`, or `fleet down` it first")
        left = (later["meta"].get("summary") or {}).get("checkpoints") or latest_snapshots(
            store, later["id"], list(range(int(summary.get("machines") or 1))))   # a lost attempt's summary has none
        if left:
            raise UsageError(f"run {run['id']} was already resumed, as run {later['id']} ({later['status']})",
                             hint=f"resume the latest attempt: `fleet up --resume {later['id']}`")
    ranks = sorted(int(r) for r in (summary.get("checkpoints") or {}))
    snapshots = latest_snapshots(store, run["id"], ranks or list(range(int(summary.get("machines") or 1))))
    if not snapshots:
        raise UsageError(f"run {run['id']} left no checkpoint to resume from",
                         hint="write the checkpoint into $FLEET_CHECKPOINT_DIR (docs/managed-runs.md)")
    return Resume(attempt=int(summary.get("attempt") or 1) + 1, snapshots=snapshots, of_run=run["id"])


def resume_options(options, config, run_id: str, *, check_owner: bool = True):
    """RunOptions for the next attempt of `run_id` (its state and store are the config's)."""
    from dataclasses import replace
    from ..snapshots import open_store
    from ..state import open_state
    state = open_state(config.state_url)
    resume = resume_of(state, open_store(config.store), run_id, config.user, check_owner=check_owner)
    _refuse_trial_without_its_inputs(state, run_id, config)
    return replace(options, resume=resume)


def _refuse_trial_without_its_inputs(state, run_id: str, config) -> None:
    """A sweep trial (found through the chain of attempts) resumed with fleet.toml's command and no
    FLEET_PARAM_* silently ran another experiment: its own must be given again (a secret: masked)."""
    import shlex
    from ..errors import FleetError, UsageError
    from ..masking import Masker
    from ..state.resumes import lineage
    run = state.get_run(run_id)
    for rid in lineage(state.db, run["id"]):     # an attempt that resumed a trial carries no trial itself
        try:
            trial_run = state.get_run(rid)
        except FleetError:     # the run it continued is gone from the state
            return
        if (meta := trial_run.get("meta") or {}).get("trial"):
            break
    else:
        return
    params = meta.get("params")
    if not isinstance(params, dict):    # from before params were kept in its row: its record, or none
        try:
            from ..records.chain import get_record
            params = {k: v for k, v in (get_record(trial_run["id"], state.db).env or {}).items()
                      if k.startswith("FLEET_PARAM_")}
        except Exception:  # noqa: BLE001
            params = {}
    mask = Masker.for_config(config)
    stored = [trial_run.get("command") or "", *(f"{k}={v}" for k, v in sorted(params.items()))]
    given = [config.command or "", *(f"{k}={config.env.get(k)}" for k in sorted(params))]
    if all(s in (g, mask(g), mask.redacting()(g)) for s, g in zip(stored, given)):
        return
    again = " ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in sorted(params.items()))
    raise UsageError(f"run {run['id']} continues sweep trial {meta['trial']} ({trial_run['id']}): resumed with this "
                     "fleet.toml's command and without its parameters, it would be another experiment from its "
                     "checkpoint; nothing was leased",
                     hint=f"fleet up --resume {run['id']} {again + ' ' if again else ''}-- "
                          f"{shlex.quote(trial_run.get('command') or '')}"
                          + (" (for a masked value, the secret itself)" if "***" in again + str(stored) else ""))
