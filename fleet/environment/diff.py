"""How two environments differ: image, machine, GPU and driver, OS, Python, packages, lock files.

Used by `fleet runs diff` (between any two runs) and by a rerun (between the recorded environment
and the one it got: what pinning could not reproduce).
"""
from __future__ import annotations

from dataclasses import dataclass

from .model import MachineEnvironment, RunEnvironment


@dataclass(frozen=True)
class Change:
    """One difference: `area` is what kind of thing (image, package, driver …), `item` which one."""

    area: str
    item: str
    before: str | None          # None: absent in the first run
    after: str | None           # None: absent in the second run

    @property
    def kind(self) -> str:
        return "added" if self.before is None else "removed" if self.after is None else "changed"

    def line(self) -> str:
        what = f"{self.area} {self.item}".strip()
        if self.before is None:
            return f"{what}: added ({self.after})"
        if self.after is None:
            return f"{what}: removed (was {self.before})"
        return f"{what}: {self.before} → {self.after}"

    def to_json(self) -> dict[str, str | None]:
        return {"area": self.area, "item": self.item, "kind": self.kind, "before": self.before, "after": self.after}


_FIELDS = (   # (area, how to read it); the image first: it explains most of the rest
    ("image", lambda e: e.image.label()),
    ("instance type", lambda e: e.instance_type),
    ("lifecycle", lambda e: e.lifecycle),
    ("gpu", lambda e: f"{e.gpu.count} × {e.gpu.model}"),
    ("driver", lambda e: e.gpu.driver),
    ("cuda", lambda e: e.gpu.cuda),
    ("os", lambda e: e.os_release),
    ("kernel", lambda e: e.kernel),
    ("python", lambda e: e.python),
)


def _package(p) -> str:
    return f"{p.version} (sha256 {p.sha256[:12]})"


def diff_machine(a: MachineEnvironment, b: MachineEnvironment) -> list[Change]:
    out = [Change(area, "", read(a), read(b)) for area, read in _FIELDS if read(a) != read(b)]
    if a.image.recipe_hash != b.image.recipe_hash and a.image.label() == b.image.label():
        out.append(Change("image", "recipe hash", a.image.recipe_hash, b.image.recipe_hash))
    pa = {p.name.lower(): p for p in a.packages}
    pb = {p.name.lower(): p for p in b.packages}
    for name in sorted(set(pa) | set(pb)):
        x, y = pa.get(name), pb.get(name)
        if x is None or y is None or (x.version, x.sha256) != (y.version, y.sha256):
            out.append(Change("package", (x or y).name, _package(x) if x else None, _package(y) if y else None))
    la = {f.name: f.sha256[:12] for f in a.lock_files}
    lb = {f.name: f.sha256[:12] for f in b.lock_files}
    out += [Change("lock file", n, la.get(n), lb.get(n)) for n in sorted(set(la) | set(lb)) if la.get(n) != lb.get(n)]
    return out


def diff_environments(a: RunEnvironment | None, b: RunEnvironment | None) -> list[Change]:
    """Kind by kind; a kind only one run had is itself a difference. A run recorded without an
    environment (before environments were captured) differs by having none."""
    if a is None and b is None:
        return []
    if a is None or b is None:
        return [Change("environment", "", None if a is None else "recorded", None if b is None else "recorded")]
    ka = {m.kind: m for m in a.machines}
    kb = {m.kind: m for m in b.machines}
    if len(ka) == 1 and len(kb) == 1:   # one kind each (the usual case): compare them, whatever their names
        ma, mb = next(iter(ka.values())), next(iter(kb.values()))
        out = [] if ma.machines == mb.machines else [Change("machines", "", str(ma.machines), str(mb.machines))]
        return out + diff_machine(ma, mb)
    out: list[Change] = []
    for kind in sorted(set(ka) | set(kb)):
        x, y = ka.get(kind), kb.get(kind)
        if x is None or y is None:
            out.append(Change("machine kind", kind, f"{x.machines} machine(s)" if x else None,
                              f"{y.machines} machine(s)" if y else None))
            continue
        out += [Change(c.area, f"{kind}: {c.item}".rstrip(": "), c.before, c.after) for c in diff_machine(x, y)]
    return out


def pinned_differences(recorded: RunEnvironment, now: RunEnvironment) -> list[str]:
    """What a rerun got that the recorded run did not have (one line each, recorded with the rerun)."""
    return [c.line() for c in diff_environments(recorded, now)]
