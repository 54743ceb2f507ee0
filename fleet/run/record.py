"""Stage "record": the run record, appended once to the hash chain from the run's RunSummary and
its pinned inputs (secrets redacted before anything is stored)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..config.model import Config
from .context import RunContext
from .summary import RunSummary
from .types import PinnedInputs, RecordRef

if TYPE_CHECKING:
    from ..environment.model import RunEnvironment


def config_for_record(config: Config) -> dict[str, Any]:
    """What a rerun needs to run the same thing again; secret values are redacted wherever they
    appear (env entries named like secrets, and any secret value inside command, setup or env)."""
    from ..masking import REDACTED, Masker
    from ..models import to_jsonable
    from ..records.chain import redact_env
    masker = Masker.for_config(config, mark=REDACTED)
    return masker.mask_obj(to_jsonable({
        "project": config.project, "name": config.name, "command": config.command, "setup": config.setup,
        "gpus": config.gpus, "template": config.template, "provider": config.provider, "per_gpu": config.per_gpu,
        "env": redact_env(config.env, config.secrets), "secrets": list(config.secrets), "outputs": config.outputs,
        "max_duration_s": config.max_duration_s, "heartbeat_ttl_s": config.heartbeat_ttl_s,
        "python": config.python, "budget": config.budget, "data": dict(config.data), "store": config.store,
        # only when asked: records made without a type keep the config hash they always had
        **({"gpu_type": str(config.gpu_type)} if config.gpu_type else {}),
    }))


def write_record(ctx: RunContext, pins: PinnedInputs, summary: RunSummary,
                 environment: "RunEnvironment | None" = None) -> RecordRef:
    from ..models import to_jsonable
    from ..records.chain import RunRecord, append_record, ci_context, config_hash, scrub
    cfg, offer, lease = ctx.config, ctx.offer, ctx.lease
    env = {k: str(v) for k, v in cfg.env.items()}
    secret_env = {**env, **{n: os.environ.get(n, "") for n in cfg.secrets}}
    recorded_config = config_for_record(cfg)
    machine_types = sorted({m.instance_type or offer.template.name for m in lease.machines}) if lease else []
    image = (lease.meta.get("image_id") or lease.meta.get("ami")) if lease is not None else None
    rerun_of = ctx.options.rerun_of
    record = RunRecord(
        run_id=ctx.run_id, command=scrub(ctx.command, secret_env, cfg.secrets), project=offer.project,
        user=offer.user, provider=offer.provider, template=offer.template.name, image_id=image,
        machine_types=machine_types, code_commit=pins.code_commit, code_snapshot=pins.code_snapshot,
        code_dirty_snapshot=pins.code_dirty_snapshot, code_subdir=pins.code_subdir,
        data_snapshots=dict(pins.data_snapshots), output_snapshot=summary.output_snapshot, store=pins.store_url,
        config_hash=config_hash(recorded_config), config=recorded_config, env=env,
        started_at=summary.started_at, ended_at=summary.ended_at, exit_status=summary.exit_code,
        status=summary.status, cost_usd=summary.cost, cost_shadow=summary.would_cost_usd is not None,
        lease_id=ctx.lease_id, rerun_of=rerun_of.run_id if rerun_of else None,
        ci=ci_context(), gpus=offer.gpus, machines=summary.machines,
        reason=summary.message if summary.outputs_incomplete else None,   # names what did not come home
        resumed_from=ctx.options.resume.of_run if ctx.options.resume else None, resumed=_resumed(ctx),
        attempts=list(summary.attempts or []),
        environment=environment.to_json() if environment is not None else {},
        launched=[to_jsonable(m) for m in summary.launched or []])
    append_record(record, ctx.state.db, secrets=cfg.secrets)
    return RecordRef(hash=record.hash, output_snapshot=summary.output_snapshot)


def _resumed(ctx: RunContext) -> dict[str, Any] | None:
    """The checkpoints this attempt started from (those of its lease's ranks: checkpoints.begin
    restores no other), so that a rerun starts from them too rather than from scratch."""
    resume = ctx.options.resume
    if resume is None:
        return None
    ranks = {m.node_rank for m in ctx.lease.machines} if ctx.lease is not None else set()
    restored = {str(rank): sid for rank, sid in sorted(resume.snapshots.items()) if rank in ranks}
    return {"attempt": ctx.attempt, "checkpoints": restored} if restored else {}
