"""Pinned inputs for `fleet up`: pin code + data before leasing, stage them, snapshot outputs, record.

Plugged into fleet/api.py as a run hook (see fleet/run_context.py), so the flow stays there:
  before_lease  pin the code commit (refusing a dirty tree before any money is spent) and snapshot
                each `[data]` entry; for a rerun, verify every recorded snapshot chunk by chunk instead
  stage         sync code to the run's working directory and data to $FLEET_DATA/<name> on every machine
  after_run     snapshot the outputs that came home, then append the run record (hash-chained)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config_model import Config
from ..errors import FleetError

RUN_DIR_ROOT = "runs"


def config_for_record(config: Config) -> dict[str, Any]:
    """What a rerun needs to run the same thing again; secret values are redacted wherever they
    appear (env entries named like secrets, and any secret value inside command, setup or env)."""
    from ..masking import REDACTED, Masker
    from ..models import to_jsonable
    from ..records import redact_env
    masker = Masker.for_config(config, mark=REDACTED)
    return masker.mask_obj(to_jsonable({
        "project": config.project, "name": config.name, "command": config.command, "setup": config.setup,
        "gpus": config.gpus, "template": config.template, "provider": config.provider, "per_gpu": config.per_gpu,
        "env": redact_env(config.env, config.secrets), "secrets": list(config.secrets), "outputs": config.outputs,
        "max_duration_s": config.max_duration_s, "heartbeat_ttl_s": config.heartbeat_ttl_s,
        "python": config.python, "budget": config.budget, "data": dict(config.data), "store": config.store,
    }))


class SnapshotHook:
    def __init__(self, config: Config):
        self.config = config
        self.store = None
        self.pins: dict[str, Any] = {}
        self.stage_stats: list = []
        self.sources: dict = {}       # S3 source listings by id ([data] x = "s3://…")

    # -- before_lease ---------------------------------------------------------------------------
    def before_lease(self, ctx) -> None:
        from . import open_store, verify_or_raise
        self.store = open_store(self.config.store)
        rerun = self.config.raw.get("_rerun")
        if rerun:
            self.pins = dict(rerun["pins"])
            from .sources import recheck
            self.sources = recheck(self.config.data, self.pins.get("data_snapshots", {}), rerun["run_id"])
            for role, sid in self._snapshot_roles():
                try:
                    verify_or_raise(self.store, sid, deep=True)
                except FleetError as exc:
                    raise type(exc)(f"cannot rerun {rerun['run_id']}: {role} input: {exc.message}") from None
        else:
            from ..codepin import pin_code
            from .create import DEFAULT_EXCLUDES
            allow_dirty = bool(self.config.raw.get("_cli", {}).get("allow_dirty"))
            base = self.config.base_dir.resolve()
            inside = []     # [data] paths under the experiment dir are data, not code
            for rel in self.config.data.values():
                p = (base / rel).resolve()
                if p != base and p.is_relative_to(base):
                    inside.append(p.relative_to(base).as_posix() + ("/" if "/" not in p.relative_to(base).as_posix() else ""))
            pin = pin_code(base, self.store, allow_dirty=allow_dirty,
                           ignore=(RUN_DIR_ROOT, self.config.outputs), excludes=DEFAULT_EXCLUDES + tuple(inside))
            if pin.warning:
                ctx.events.warn(pin.warning)
            from .sources import pin_data
            data, self.sources = pin_data(self.config.data, self.config.base_dir, self.store)
            self.pins = {"code_commit": pin.commit, "code_snapshot": pin.code_snapshot_id,
                         "code_dirty_snapshot": pin.dirty_snapshot_id, "code_subdir": pin.subdir,
                         "data_snapshots": data}
        ctx.record.update(self.pins)

    def _snapshot_roles(self):
        for role in ("code_snapshot", "code_dirty_snapshot"):
            if self.pins.get(role):
                yield role.replace("_snapshot", "").replace("_", "-"), self.pins[role]
        for name, sid in sorted(self.pins.get("data_snapshots", {}).items()):
            if sid not in self.sources:
                yield f"data {name}", sid

    # -- stage ----------------------------------------------------------------------------------
    def stage(self, ctx) -> bool:
        from ..stage import code_dir
        from .sync import Target, data_dir
        pins = self.pins

        def targets(m) -> list[Target]:
            code_ids = [pins["code_snapshot"]] + ([pins["code_dirty_snapshot"]] if pins.get("code_dirty_snapshot") else [])
            out = [Target(code_dir(m), code_ids, read_only=False)]
            out += [Target(data_dir(m, name), [sid], read_only=True)
                    for name, sid in sorted(pins.get("data_snapshots", {}).items())]
            return out

        from .sync_progress import stage_lease
        self.stage_stats = stats = stage_lease(ctx, self.store, targets, self.sources, self.config)
        ctx.record["staged_bytes"] = sum(s.bytes_sent for s in stats)
        return True

    # -- after_run ------------------------------------------------------------------------------
    def after_run(self, ctx, summary: dict) -> None:
        """Never raises: a failure here must not stop the release or hide the run's own result."""
        try:
            output_id = self._snapshot_outputs(ctx)
            if output_id:
                summary["output_snapshot"] = output_id
            self._write_record(ctx, summary, output_id)
        except Exception as exc:  # noqa: BLE001
            ctx.events.warn(f"could not write the run record for {ctx.run_id}: {exc}")

    def _snapshot_outputs(self, ctx) -> str | None:
        if self.store is None:
            return None
        from .create import DEFAULT_EXCLUDES, SnapshotBuilder, walk_tree
        nodes = sorted(p for p in Path(ctx.run_dir).glob("node-*") if p.is_dir())
        if not nodes:
            return None
        builder = SnapshotBuilder(self.store)
        for node in nodes:
            builder.add_dir(node.name)
            for rel, real, st in walk_tree(node, DEFAULT_EXCLUDES):
                path = f"{node.name}/{rel}"
                if os.path.islink(real):
                    builder.add_symlink(path, os.readlink(real))
                elif real.is_dir():
                    builder.add_dir(path, st.st_mode)
                elif real.is_file():
                    builder.add_file(path, real, st)
        return builder.publish().id

    def _write_record(self, ctx, summary: dict, output_id: str | None) -> None:
        from ..records import RunRecord, append_record, ci_context, config_hash, scrub
        cfg = self.config
        rerun = cfg.raw.get("_rerun") or {}
        lease = ctx.lease
        env = {k: str(v) for k, v in cfg.env.items()}
        secret_env = {**env, **{n: os.environ.get(n, "") for n in cfg.secrets}}
        recorded_config = config_for_record(cfg)
        machine_types = sorted({m.instance_type or ctx.plan.template.name for m in lease.machines}) if lease else []
        image = None
        if lease is not None:
            image = lease.meta.get("image_id") or lease.meta.get("ami")
        record = RunRecord(
            run_id=ctx.run_id, command=scrub(ctx.command, secret_env, cfg.secrets), project=ctx.plan.project,
            user=ctx.plan.user, provider=ctx.plan.provider, template=ctx.plan.template.name, image_id=image,
            machine_types=machine_types, code_commit=self.pins.get("code_commit"),
            code_snapshot=self.pins.get("code_snapshot"), code_dirty_snapshot=self.pins.get("code_dirty_snapshot"),
            code_subdir=self.pins.get("code_subdir") or "", data_snapshots=dict(self.pins.get("data_snapshots", {})),
            output_snapshot=output_id, store=self.store.url if self.store else "",
            config_hash=config_hash(recorded_config), config=recorded_config, env=env,
            started_at=summary.get("started_at"), ended_at=summary.get("ended_at"),
            exit_status=summary.get("exit_code"), status=summary.get("status", ""),
            cost_usd=summary.get("cost"), lease_id=ctx.lease_id, rerun_of=rerun.get("run_id"),
            ci=ci_context(), gpus=ctx.plan.gpus, machines=ctx.plan.machine_count)
        append_record(record, ctx.state.db, secrets=cfg.secrets)
        summary["record_hash"] = record.hash
