"""What a run's machines were: the typed environment stored in the run record.

One `MachineEnvironment` per distinct machine kind of the run (not per rank), gathered by one
remote command per kind (fleet/environment/probe.py) and completed with what the controller knows
(provider, template, instance type, the image the provider booted). `RunEnvironment` is the run's
whole section: those kinds, the store snapshot holding the package set's wheels (what a rerun
installs from, offline), and, for a rerun, what could not be pinned.

Never holds an environment variable, a path under a lease's workdir or anything secret: the probe
reads no `os.environ`, and the record is masked again before it is stored.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any

NONE = "none"


@dataclass(frozen=True)
class Package:
    """One distribution installed in the run's own environment.

    `sha256` hashes the installed files as the distribution's RECORD lists them (sorted, without the
    installer's bookkeeping, byte-compiled files and generated scripts), so the same wheel installed
    anywhere has the same hash, and a rerun proves it installed exactly this by hashing again."""

    name: str
    version: str
    sha256: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class LockFile:
    """A lock/requirements file of the project (requirements*.txt, uv.lock, poetry.lock, conda spec)."""

    name: str
    sha256: str


@dataclass(frozen=True)
class ImageRef:
    """The image the machine booted: a baked AMI (with its recipe and the recipe's content hash) or,
    on local/ssh/slurm machines, the host's operating system image."""

    kind: str                         # "ami" | "host-os"
    id: str                           # ami-0123… | the host's PRETTY_NAME ("Debian GNU/Linux 12 (bookworm)")
    recipe: str | None = None         # images/<recipe>/ it was baked from
    recipe_hash: str | None = None    # that recipe's content hash (fleet/images/recipe.py)

    def label(self) -> str:
        if self.recipe:
            return f"{self.id} (recipe {self.recipe} @ {(self.recipe_hash or '?')[:12]})"
        return self.id


@dataclass(frozen=True)
class GpuInfo:
    model: str                        # "NVIDIA H100 80GB HBM3" | "simulated" | "none"
    count: int
    driver: str = NONE                # from NVML or nvidia-smi; "none" without either
    cuda: str = NONE                  # the driver's CUDA version
    simulated: bool = False           # the local provider's GPUs are slots, not devices


@dataclass(frozen=True)
class MachineEnvironment:
    kind: str                         # the key machines are grouped by (instance type, host on team hosts)
    machines: int                     # how many of the run's machines are of this kind
    provider: str
    template: str
    instance_type: str
    lifecycle: str                    # "on-demand" | "spot" | "host" (a machine fleet does not make)
    image: ImageRef
    kernel: str
    os_release: str
    gpu: GpuInfo
    python: str                       # "CPython 3.11.2"
    packages: tuple[Package, ...] = ()
    lock_files: tuple[LockFile, ...] = ()

    @property
    def packages_hash(self) -> str:
        """The package set's identity: same names, versions and contents → same hash."""
        return package_set_hash(self.packages)

    def package(self, name: str) -> Package | None:
        return next((p for p in self.packages if p.name == name), None)


@dataclass(frozen=True)
class RunEnvironment:
    machines: tuple[MachineEnvironment, ...]
    wheels_snapshot: str | None = None      # the package set's wheels in the run's store (content-addressed)
    pinned_from: str | None = None          # a rerun: the run whose environment it installed
    differences: tuple[str, ...] = ()       # a rerun: what differs from that run's environment, and why
    capture_s: float = 0.0

    @property
    def primary(self) -> MachineEnvironment | None:
        return self.machines[0] if self.machines else None

    def to_json(self) -> dict[str, Any]:
        from ..models import to_jsonable
        return to_jsonable(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "RunEnvironment | None":
        """A stored section back into types; None for a record without one (written before #21)."""
        if not data:
            return None
        machines = tuple(_machine(m) for m in data.get("machines") or ())
        return cls(machines=machines, wheels_snapshot=data.get("wheels_snapshot"),
                   pinned_from=data.get("pinned_from"), differences=tuple(data.get("differences") or ()),
                   capture_s=float(data.get("capture_s") or 0.0))


def package_set_hash(packages: tuple[Package, ...] | list[Package]) -> str:
    lines = sorted(f"{p.name.lower()}=={p.version} {p.sha256}" for p in packages)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _machine(data: dict[str, Any]) -> MachineEnvironment:
    d = _known(MachineEnvironment, data)
    d["image"] = ImageRef(**_known(ImageRef, d.get("image") or {"kind": "unknown", "id": "unknown"}))
    d["gpu"] = GpuInfo(**_known(GpuInfo, d.get("gpu") or {"model": NONE, "count": 0}))
    d["packages"] = tuple(Package(**_known(Package, p)) for p in d.get("packages") or ())
    d["lock_files"] = tuple(LockFile(**_known(LockFile, f)) for f in d.get("lock_files") or ())
    return MachineEnvironment(**d)


@dataclass(frozen=True)
class PinnedEnvironment:
    """`fleet rerun`: the recorded environment the new run must reproduce."""

    run_id: str
    environment: RunEnvironment
    allow_image_change: bool = False
    allow_package_change: bool = False     # run the command even if packages still differ
    notes: tuple[str, ...] = field(default=())   # differences known before leasing (image gone, allowed)
