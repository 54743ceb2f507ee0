"""Lineage of runs: `rerun` (same command on byte-identical inputs) and `audit` (what a run was made of,
and whether every record and snapshot is still intact)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FleetError, IntegrityError, UsageError
from .chain import REDACTED, RunRecord, get_record, iter_records, verify_chain

if TYPE_CHECKING:
    from ..environment.model import PinnedEnvironment
    from ..run.summary import RunSummary
    from ..run.types import RerunOf


def _stores():
    from ..snapshots import open_store
    cache: dict[str, Any] = {}

    def get(url: str):
        if url not in cache:
            cache[url] = open_store(url or None)
        return cache[url]
    return get


def rerun_config(rec: RunRecord, base_dir: Path):
    """A Config that runs the recorded command with the recorded pins (never the working directory)."""
    from decimal import Decimal

    from ..config.model import Config
    cfg = dict(rec.config)
    if not cfg:
        raise UsageError(f"run {rec.run_id} has no recorded configuration (recorded by an older fleet)")
    for what in ("command", "setup"):
        if REDACTED in (cfg.get(what) or "") or (what == "command" and REDACTED in rec.command):
            raise UsageError(f"run {rec.run_id}'s {what} contained a secret that was redacted; it cannot be replayed",
                             hint="name the secret in `secrets` and read it from the environment (pip reads "
                                  "PIP_INDEX_URL), so the record holds none")
    env = {}
    for k, v in (cfg.get("env") or {}).items():
        if v != REDACTED and REDACTED in str(v):
            raise UsageError(f"run {rec.run_id}'s [env] {k} contained a secret that was redacted; it cannot be replayed")
        if v == REDACTED:
            if k not in os.environ:
                raise UsageError(f"run {rec.run_id} set {k}, which was redacted in its record",
                                 hint=f"export {k} to rerun it")
            v = os.environ[k]
        env[k] = v
    if not rec.code_snapshot:
        raise UsageError(f"run {rec.run_id} has no pinned code snapshot; it cannot be rerun byte for byte")
    from ..gpus import parse_gpu_type
    return _under_local_policy(Config(
        path=None, base_dir=base_dir, project=cfg.get("project") or rec.project, name=cfg.get("name") or rec.project,
        command=rec.command, setup=cfg.get("setup"), gpus=cfg.get("gpus"), template=cfg.get("template") or rec.template,
        gpu_type=parse_gpu_type(cfg["gpu_type"]) if cfg.get("gpu_type") else None,
        provider=cfg.get("provider") or rec.provider, per_gpu=bool(cfg.get("per_gpu")), env=env,
        secrets=list(cfg.get("secrets") or []), outputs=cfg.get("outputs") or "outputs",
        max_duration_s=int(cfg.get("max_duration_s") or 4 * 3600),
        heartbeat_ttl_s=int(cfg.get("heartbeat_ttl_s") or 300), python=cfg.get("python"),
        budget=Decimal(cfg["budget"]) if cfg.get("budget") else None, data=dict(cfg.get("data") or {}),
        store=rec.store or None, user=None), base_dir)


def _under_local_policy(config, base_dir: Path):
    """The recorded run under the limits of where it is rerun: the record pins what runs, never what
    may be spent or where. Budgets, the queue, prices, the providers' settings (hosts, region), the
    state, the caches and the outputs limit come from the fleet.toml in `base_dir`, as they would for
    `fleet up` there; without one, the defaults (as `fleet up -- CMD` outside an experiment)."""
    import dataclasses

    from ..config.loader import find_config_file, load_config
    if find_config_file(cwd=base_dir) is None:
        return config
    here = load_config(cwd=base_dir)
    return dataclasses.replace(
        config, budgets=here.budgets, queue_max_gpus_per_user=here.queue_max_gpus_per_user, prices=here.prices,
        provider_settings=here.provider_settings, state_url=here.state_url, cache_max=here.cache_max,
        cache_dir=here.cache_dir, user=here.user, outputs_max_bytes=here.outputs_max_bytes)


def rerun_of(rec: RunRecord, environment: "PinnedEnvironment | None" = None) -> "RerunOf":
    """The pins a rerun must match byte for byte (verified chunk by chunk before leasing), and the
    environment it installs again (fleet/environment/pin.py)."""
    from ..run.types import PinnedInputs, RerunOf
    return RerunOf(run_id=rec.run_id, pins=PinnedInputs(
        code_commit=rec.code_commit, code_snapshot=rec.code_snapshot, code_dirty_snapshot=rec.code_dirty_snapshot,
        code_subdir=rec.code_subdir, data_snapshots=dict(rec.data_snapshots), store_url=rec.store),
        environment=environment)


def rerun(run_id: str, *, base_dir: Path | None = None, events=None, keep_s: int | None = None, ci: bool = False,
          db=None, allow_image_change: bool = False, allow_package_change: bool = False,
          confirm=None) -> "RunSummary":
    """`confirm`: asked with the plan before anything is leased (RunOptions.confirm)."""
    from ..environment.pin import pinned_for_rerun, verify_wheels
    from ..run.offer import provider_for
    from ..run.pipeline import up
    from ..run.types import RunOptions
    from ..snapshots import file_hashes, open_store
    rec = get_record(run_id, db)
    problems = record_problems(rec, db)
    if problems:   # what a rerun replays (command, code, data) comes from this record: it must be the one written
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"run {rec.run_id}'s record cannot be trusted: {problems[0]}{more}",
                             hint="`fleet audit --verify` lists every problem; nothing was leased")
    resume = resumed_inputs(rec)
    config = rerun_config(rec, (base_dir or Path.cwd()).resolve())
    provider = provider_for(config)
    # Before anything is leased: the recorded image must still exist (or --allow-image-change).
    pinned = pinned_for_rerun(rec.run_id, rec.environment, provider, allow_image_change=allow_image_change,
                              allow_package_change=allow_package_change)
    if pinned is not None:
        verify_wheels(rec.store, pinned)
    summary = up(config, events=events, provider=provider,
                 options=RunOptions(keep_s=keep_s, ci=ci, rerun_of=rerun_of(rec, pinned), confirm=confirm,
                                    resume=resume))
    new_out = summary.output_snapshot
    if rec.output_snapshot and new_out:
        store = open_store(rec.store or None)
        before, after = file_hashes(store, rec.output_snapshot), file_hashes(store, new_out)
        differ = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
        summary = summary.updated(outputs_identical=not differ, outputs_differ=differ)
    return summary


def resumed_inputs(rec: RunRecord):
    """The checkpoints a resumed attempt started from, to start the rerun from (verified chunk by
    chunk before anything is leased); None for a run that started afresh. From scratch, a rerun of
    an attempt that continued another's training ran something else, and said nothing."""
    from ..run.checkpoints import Resume
    from ..snapshots import open_store, verify_or_raise
    if rec.resumed is None and rec.resumed_from:
        raise UsageError(f"cannot rerun {rec.run_id}: it resumed from run {rec.resumed_from}'s checkpoints, which "
                         "its record does not name (recorded by an older fleet); from scratch it would run "
                         "something else", hint=f"`fleet rerun {rec.resumed_from}` reruns the run it continued")
    checkpoints = rec.resumed_checkpoints()
    if not checkpoints:
        return None
    store = open_store(rec.store or None)
    for rank, sid in sorted(checkpoints.items()):
        try:
            verify_or_raise(store, sid, deep=True)
        except FleetError as exc:
            raise type(exc)(f"cannot rerun {rec.run_id}: the checkpoint node {rank} started from: {exc.message}") \
                from None
    attempt = rec.resumed.get("attempt") if isinstance(rec.resumed, dict) else None
    return Resume(attempt=attempt if isinstance(attempt, int) and attempt > 1 else 2,
                  snapshots={int(rank): sid for rank, sid in checkpoints.items() if rank.isdigit()})


def record_problems(rec: RunRecord, db=None) -> list[str]:
    """Why `rec` may not be the record that was written: its own hash, the chain's links from it to
    the tip, and the anchors that vouch for the tip (empty: it is)."""
    from .anchor import check_anchors
    from .chain import _db
    db = _db(db)
    return verify_chain(db, from_seq=rec.seq) + check_anchors(db, {rec.store} if rec.store else set())


def s3_sources(rec: RunRecord) -> dict[str, str]:
    """role → URL of the `[data]` entries that were S3 prefixes: pinned in place by their listing's id,
    which names no snapshot in the store (the run's machines fetched the objects themselves)."""
    data = rec.config.get("data") if isinstance(rec.config, dict) else None
    return {f"data:{name}": url for name, url in (data if isinstance(data, dict) else {}).items()
            if isinstance(url, str) and url.startswith("s3://") and name in rec.data_snapshots}


def s3_source_problems(url: str, listing_id: str) -> list[str]:
    """Whether the prefix still lists as the run pinned it (as a rerun checks before leasing): every
    audit of a run with S3 data failed on "no snapshot … in the store"."""
    from ..snapshots.sources import list_s3
    try:
        now = list_s3(url).id
    except FleetError as exc:
        return [exc.one_line()]
    return [] if now == listing_id else [f"{url} changed since the run (listing {now[:12]}, the run used "
                                         f"{listing_id[:12]}): objects were added, removed or rewritten"]


def audit(run_id: str, *, db=None) -> dict[str, Any]:
    from ..snapshots import load, verify
    rec = get_record(run_id, db)
    stores = _stores()
    snaps = []
    sources = s3_sources(rec)
    for role, sid in rec.snapshot_ids().items():
        item: dict[str, Any] = {"role": role, "id": sid}
        if role in sources:
            problems = s3_source_problems(sources[role], sid)
            item.update(source=sources[role], present=not problems, problems=problems)
            snaps.append(item)
            continue
        try:
            store = stores(rec.store)
            m = load(store, sid)
            problems = verify(store, sid, deep=False)
            item.update(files=len(m.files()), size=m.total_size, present=not problems, problems=problems)
        except FleetError as exc:
            item.update(present=False, problems=[exc.one_line()])
        snaps.append(item)
    chain_problems = record_problems(rec, db)
    body = rec.body()
    return {"record": body, "seq": rec.seq, "hash": rec.hash, "chain_ok": not chain_problems,
            "chain_problems": chain_problems, "snapshots": snaps}


def audit_verify(*, deep: bool = False, db=None) -> dict[str, Any]:
    """Check the whole chain and every snapshot any record references."""
    from ..snapshots import verify
    from .chain import _db
    from .anchor import anchor_notes, check_anchors
    db = _db(db)
    chain = verify_chain(db)
    unreadable: list[str] = []      # verify_chain names them already: their snapshots are unknown
    stores = _stores()
    store_urls: set[str] = set()
    checked: dict[tuple[str, str], list[str]] = {}
    snapshot_problems: list[str] = []
    records = 0
    # Oldest first, a page at a time: a chain of thousands of records is never held at once.
    for rec in iter_records(db, limit=None, damaged=unreadable, oldest_first=True):
        records += 1
        if rec.store:
            store_urls.add(rec.store)
        sources = s3_sources(rec)
        for role, sid in rec.snapshot_ids().items():
            key = (sources.get(role) or rec.store, sid)
            if key not in checked:
                try:
                    checked[key] = (s3_source_problems(sources[role], sid) if role in sources
                                    else verify(stores(rec.store), sid, deep=deep))
                except FleetError as exc:
                    checked[key] = [exc.one_line()]
            snapshot_problems += [f"run {rec.run_id} {role}: {p}" for p in checked[key]]
    chain += check_anchors(db, store_urls)
    return {"records": records, "snapshots_checked": len(checked), "chain_problems": chain,
            "snapshot_problems": snapshot_problems, "ok": not chain and not snapshot_problems,
            "anchor_notes": anchor_notes(db, store_urls) if records else []}


def raise_if_bad(result: dict[str, Any]) -> None:
    problems = result["chain_problems"] + result["snapshot_problems"]
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(problems[0] + more)
