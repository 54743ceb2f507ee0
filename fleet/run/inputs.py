"""Pinned inputs: stage "pin" (before any money is spent) and the input half of stage "stage".

  pin    pin the code commit (refusing a dirty tree before leasing) and snapshot each `[data]`
         entry; for a rerun, verify every recorded snapshot chunk by chunk instead
  stage  sync code to the run's working directory and data to $FLEET_DATA/<name> on every machine
  outputs  (for the record) snapshot the outputs that came home
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..config.model import Config
from ..errors import FleetError
from ..models import Lease
from .context import Events
from .types import PinnedInputs, RunOptions, StagedInputs

RUN_DIR_ROOT = "runs"


class Inputs:
    """The run's snapshot store and what its inputs are pinned to."""

    def __init__(self, config: Config):
        self.config = config
        self.store: Any = None
        self.pins = PinnedInputs()
        self.sources: dict = {}       # S3 source listings by id ([data] x = "s3://…"): machines fetch them
        # The run's stop (a signal, the budget): set, staging ends at the next chunk it sends.
        self.stop: Any = None

    def checkpoint_store(self) -> Any:
        """Where checkpoints go: the run's store (that of its pinned inputs, else the config's)."""
        if self.store is None:
            from ..snapshots import open_store
            self.store = open_store(self.config.store)
        return self.store

    def pin(self, options: RunOptions, events: Events) -> PinnedInputs:
        from ..records.anchor import signing_key
        from ..snapshots import open_store
        signing_key()      # the record is signed with it: a key that cannot be used fails before any lease
        self.store = open_store(self.config.store)
        if options.rerun_of is not None:
            self.pins = options.rerun_of.pins
            from ..snapshots.sources import recheck
            self.sources = recheck(self.config.data, dict(self.pins.data_snapshots), options.rerun_of.run_id)
            self._verify(options.rerun_of.run_id)
        else:
            self.pins = self._pin_fresh(options.allow_dirty, events)
        return self.pins

    def adopt(self, pins: PinnedInputs) -> PinnedInputs:
        """Inputs pinned by someone else (a sweep's warm pool, for each trial): no pinning again, but
        the store is open so the run's outputs are snapshotted into it like any run's."""
        if pins.pinned and pins.store_url:
            from ..snapshots import open_store
            self.store = open_store(pins.store_url)
        self.pins = pins
        return pins

    def _verify(self, run_id: str) -> None:
        from ..snapshots import verify_or_raise
        for role, sid in _snapshot_roles(self.pins, self.sources):
            try:
                verify_or_raise(self.store, sid, deep=True)
            except FleetError as exc:
                raise type(exc)(f"cannot rerun {run_id}: {role} input: {exc.message}") from None

    def _pin_fresh(self, allow_dirty: bool, events: Events) -> PinnedInputs:
        from ..records.codepin import pin_code
        from ..snapshots.create import DEFAULT_EXCLUDES
        from ..snapshots.sources import pin_data
        base = self.config.base_dir.resolve()
        inside = []     # [data] paths under the experiment dir are data, not code
        for rel in self.config.data.values():
            p = (base / rel).resolve()
            if p != base and p.is_relative_to(base):
                inside.append(p.relative_to(base).as_posix())
        excludes = tuple(name + ("/" if "/" not in name else "") for name in inside)   # a path, not a name anywhere
        pin = pin_code(base, self.store, allow_dirty=allow_dirty, ignore=(RUN_DIR_ROOT, self.config.outputs),
                       excludes=DEFAULT_EXCLUDES + excludes, data=tuple(inside))
        for warning in pin.warnings:
            events.warn(warning)
        data, self.sources = pin_data(self.config.data, self.config.base_dir, self.store, warn=events.warn)
        return PinnedInputs(code_commit=pin.commit, code_snapshot=pin.code_snapshot_id,
                            code_dirty_snapshot=pin.dirty_snapshot_id, code_subdir=pin.subdir,
                            data_snapshots=data, store_url=self.store.url)

    def stage(self, lease: Lease, events: Events) -> StagedInputs:
        """Pinned snapshots onto every machine (only chunks a machine lacks); without pins, a plain
        copy of the experiment directory."""
        if not self.pins.pinned:
            from ..parallel import parallel
            from ..stage import one_per_staging_dir, pack_directory, push_archive
            archive = pack_directory(self.config.base_dir)
            targets = one_per_staging_dir(lease.machines)     # machines sharing a filesystem: once
            parallel(targets, lambda m: push_archive(m, archive))
            return StagedInputs(machines=len(targets), bytes_sent=len(archive) * len(targets), pinned=False)
        from ..snapshots.sync import Target
        from ..snapshots.sync_remote import data_dir
        from ..snapshots.sync_progress import stage_lease
        from ..stage import code_dir
        pins = self.pins

        def targets(m) -> list[Target]:
            code_ids = [pins.code_snapshot] + ([pins.code_dirty_snapshot] if pins.code_dirty_snapshot else [])
            out = [Target(code_dir(m), code_ids, read_only=False)]
            out += [Target(data_dir(m, name), [sid], read_only=True)
                    for name, sid in sorted(pins.data_snapshots.items())]
            return out

        # stage_lease reports progress (a live line, or a plain one every few seconds) and the summary line.
        stats = stage_lease(_Staging(lease, events, self.stop), self.store, targets, self.sources, self.config)
        return StagedInputs(machines=len(stats), bytes_sent=sum(s.bytes_sent for s in stats), pinned=True)

    def snapshot_outputs(self, run_dir: Path) -> str | None:
        """The outputs that came home (runs/<id>/node-*), as one snapshot; None when there are none."""
        if self.store is None:
            return None
        from ..safe_extract import PARTIAL_PREFIX
        from ..snapshots.create import SnapshotBuilder
        from ..snapshots.tree_scan import walk_tree
        nodes = sorted(p for p in Path(run_dir).glob("node-*") if p.is_dir())
        if not nodes:
            return None
        builder = SnapshotBuilder(self.store)
        for node in nodes:
            builder.add_dir(node.name)
            for rel, real, st in walk_tree(node, ()):     # a job's .git or .venv is an output too
                if any(part.startswith(PARTIAL_PREFIX) for part in rel.split("/")):
                    continue   # a file an extraction killed part way was writing: no output
                path = f"{node.name}/{rel}"
                if os.path.islink(real):
                    builder.add_symlink(path, os.readlink(real))
                elif real.is_dir():
                    builder.add_dir(path, st.st_mode)
                elif real.is_file():
                    builder.add_file(path, real, st)
        return builder.publish().id


@dataclass(frozen=True)
class _Staging:
    """What snapshots.sync_progress.stage_lease reads of a run: its lease and where progress goes."""

    lease: Lease
    events: Events
    stop: Any = None       # a threading.Event


def _snapshot_roles(pins: PinnedInputs, sources: dict) -> Iterator[tuple[str, str]]:
    """Snapshots in the store to verify (an S3 source is re-listed instead, by `recheck`)."""
    for role, sid in (("code", pins.code_snapshot), ("code-dirty", pins.code_dirty_snapshot)):
        if sid:
            yield role, sid
    for name, sid in sorted(pins.data_snapshots.items()):
        if sid not in sources:
            yield f"data {name}", sid
