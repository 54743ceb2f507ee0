"""`fleet rerun`: the recorded environment again.

Before leasing: the recorded image must still exist where the provider can tell (AWS), else a clear
refusal, or with `--allow-image-change` a difference noted up front; the recorded wheels must be
whole in the store and hold exactly the recorded packages (wheels.py). Before setup: those wheels
go from the store onto every machine (like data: only missing chunks); every recorded package the
venv lacks, or has in another version or another build of the same version, is installed again
from them (forced, `--no-index --no-deps`), and the recorded setup then runs with pip kept offline
and held to those versions (PIP_NO_INDEX, PIP_FIND_LINKS, PIP_CONSTRAINT), so an `-U` or a newer
wheel in a find-links directory cannot move a package. What still differs afterwards (a new driver
on a team host) is listed before the command starts and recorded with the rerun (capture.py); a
package that still differs stops the rerun before its command, unless `--allow-package-change`.
"""
from __future__ import annotations

from ..errors import FleetError, IntegrityError, UsageError
from ..models import Lease, Machine
from .capture import CONSTRAINTS, probe_script
from .image import ChecksImages
from .model import PinnedEnvironment, RunEnvironment

WHEELS_DATA_NAME = ".fleet-wheels"      # under $FLEET_DATA on every machine (read-only, like data)


def pinned_for_rerun(run_id: str, recorded: dict | None, provider=None, *, allow_image_change: bool = False,
                     allow_package_change: bool = False) -> PinnedEnvironment | None:
    """The recorded environment to reproduce. A provider that names images boots the recorded one;
    when it is gone, a UsageError (or, allowed, a noted difference and the template's image)."""
    env = RunEnvironment.from_json(recorded)
    if env is None:
        return None
    notes: list[str] = []
    if isinstance(provider, ChecksImages):
        for m in env.machines:
            if m.image.kind != "ami":
                continue
            if provider.image_exists(m.image):
                provider.use_image(m.image)   # the recorded image, not the template's current one
                continue
            if not allow_image_change:
                raise UsageError(f"run {run_id} ran on image {m.image.label()}, which no longer exists",
                                 hint="bake it again from the same recipe (`fleet image bake`), or pass "
                                      "--allow-image-change to run on the template's current image "
                                      "(the difference is recorded)")
            notes.append(f"image {m.image.label()} no longer exists; the template's current image was used "
                         "(--allow-image-change)")
    return PinnedEnvironment(run_id=run_id, environment=env, allow_image_change=allow_image_change,
                             allow_package_change=allow_package_change, notes=tuple(notes))


def verify_wheels(store_url: str, pinned: PinnedEnvironment) -> None:
    """Before leasing: the recorded wheels are whole in the store, chunk by chunk (as code and data
    are), and hold exactly the recorded packages (wheels.py), so a rerun never pays for machines it
    then cannot set up, nor installs wheels someone put in the store under the set's name."""
    sid = pinned.environment.wheels_snapshot
    if not sid:
        return
    from ..snapshots import open_store, verify_or_raise
    from .wheels import wheels_problem
    store = open_store(store_url or None)
    try:
        verify_or_raise(store, sid, deep=True)
    except FleetError as exc:
        raise type(exc)(f"cannot rerun {pinned.run_id}: its package set's wheels ({sid[:12]}): {exc.message}",
                        hint="the store no longer holds what the run installed") from None
    primary = pinned.environment.primary
    problem = wheels_problem(store, sid, primary) if primary is not None and primary.packages else None
    if problem:
        raise IntegrityError(f"cannot rerun {pinned.run_id}: its package set's wheels ({sid[:12]}) are not the "
                             f"packages it recorded: {problem}",
                             hint="that snapshot was changed or planted in the store; nothing was leased")


def wheels_dir() -> str:
    return f"$FLEET_DATA/{WHEELS_DATA_NAME}"


def pinned_setup(pinned: PinnedEnvironment, setup: str | None) -> str | None:
    """The setup command of a pinned rerun: the exact package set first, then the recorded setup,
    offline and constrained. Unchanged when the recorded run installed nothing of its own."""
    env = pinned.environment
    primary = env.primary
    if primary is None or not primary.packages or not env.wheels_snapshot:
        return setup
    import shlex
    d = wheels_dir()
    constraints = f"{d}/{CONSTRAINTS}"
    # probe.py's install-pinned compares every recorded package's version *and* content hash with
    # the venv's (a warm venv that matches runs no pip, only reads RECORD files) and force-installs the
    # wheels of those that differ: pip alone keeps a same-version build it sees as satisfied.
    install = f'python -c {shlex.quote(probe_script())} install-pinned "{d}"'
    guard = f'export PIP_NO_INDEX=1 PIP_FIND_LINKS="{d}" PIP_CONSTRAINT="{constraints}"'
    return f"{install} && {{ {guard}; {setup or 'true'}\n}}"


def package_refusal(pinned: PinnedEnvironment, now: RunEnvironment) -> FleetError | None:
    """A rerun whose packages still differ from the recorded ones after the exact install (a setup
    that installed something else, a set recorded without its wheels) does not start its command
    unless the user allowed it: its result would be another package set's."""
    if pinned.allow_package_change:
        return None
    from .diff import diff_environments
    changes = [c for c in diff_environments(pinned.environment, now) if c.area == "package"]
    if not changes:
        return None
    more = f" (+{len(changes) - 1} more)" if len(changes) > 1 else ""
    return IntegrityError(f"run {pinned.run_id}'s packages could not be installed again: {changes[0].line()}{more}; "
                          "the command was not started",
                          hint="`fleet runs diff` lists them after this run is recorded; pass "
                               "--allow-package-change to run anyway (the differences are recorded)")


def stage_wheels(lease: Lease, store, pinned: PinnedEnvironment, events) -> None:
    """The recorded wheels onto every machine, from the store (verified chunks, host cache reused)."""
    sid = pinned.environment.wheels_snapshot
    if not sid:
        return
    from dataclasses import dataclass

    from ..snapshots.sync import Target

    from ..snapshots.sync_remote import data_dir
    from ..snapshots.sync_progress import stage_lease

    @dataclass(frozen=True)
    class _Staging:
        lease: Lease
        events: object

    def targets(m: Machine) -> list[Target]:
        return [Target(data_dir(m, WHEELS_DATA_NAME), [sid], read_only=True)]

    events.phase("setup", f"installing run {pinned.run_id}'s package set offline "
                          f"({len(pinned.environment.primary.packages)} packages, wheels {sid[:12]})")
    stage_lease(_Staging(lease, events), store, targets, {}, None)


def describe(pinned: PinnedEnvironment) -> str:
    env = pinned.environment
    p = env.primary
    if p is None:
        return f"run {pinned.run_id} recorded no environment"
    return (f"pinned to run {pinned.run_id}'s environment: {p.image.label()}, {p.python}, "
            f"{len(p.packages)} packages" + (f" (wheels {env.wheels_snapshot[:12]})" if env.wheels_snapshot else ""))

