"""Providers by name: Python entry points in the group `fleet.providers`, name = "module:Class".

fleet's own providers are declared in its pyproject.toml like any third-party package's would be:

    [project.entry-points."fleet.providers"]
    gcp = "fleet_gcp.provider:GCPProvider"

so a new provider is one package plus one entry. Nothing is imported until a provider is asked
for (`fleet --help` must not pay for boto3 or paramiko), and the provider modules themselves import
their heavy libraries only when they talk to the outside.

From a source checkout, fleet's own entries are read from the checkout's pyproject.toml rather
than the installed metadata: an editable install keeps the entry points of the day it was made,
so a provider added since would otherwise be missing until `pip install -e .` is run again.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EnvironmentProblem, UsageError

if TYPE_CHECKING:
    from .base import ProviderSettings

GROUP = "fleet.providers"
_OWN_PREFIX = "fleet."          # modules of fleet's own providers


@dataclass(frozen=True)
class Entry:
    name: str
    target: str                  # "package.module:Class"
    origin: str                  # where it was declared: a distribution name or a pyproject.toml path


_entries: dict[str, Entry] | None = None
_classes: dict[str, type] = {}


def _section(text: str, header: str) -> dict[str, str] | None:
    """`name = target` lines of one INI/TOML section (entry_points.txt, or our own pyproject.toml,
    whose entry-point table is plain strings): read without tomllib or importlib.metadata, whose
    imports cost more than everything else `fleet status` does with a few leases."""
    found: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            if found is not None:
                break
            if line == header:
                found = {}
            continue
        if found is not None and "=" in line and not line.startswith("#"):
            name, _, target = line.partition("=")
            found[name.strip()] = target.split("#")[0].strip().strip('"').strip("'")
    return found


def _own_entries() -> dict[str, Entry] | None:
    """fleet's own entries: from the pyproject.toml beside the package in a source checkout (an
    editable install's metadata keeps the entries of the day it was made), else from the
    installed distribution's entry_points.txt."""
    package = Path(__file__).resolve().parents[1]
    pyproject = package.parent / "pyproject.toml"
    try:
        if pyproject.is_file():
            declared = _section(pyproject.read_text(encoding="utf-8"), f'[project.entry-points."{GROUP}"]')
            origin = str(pyproject)
        else:
            dist = next(package.parent.glob("fleet_gpu-*.dist-info"), None)
            declared = _section((dist / "entry_points.txt").read_text(encoding="utf-8"), f"[{GROUP}]") \
                if dist is not None else None
            origin = "fleet-gpu"
    except OSError:
        return None
    if not declared:
        return None
    return {name: Entry(name, target, origin) for name, target in declared.items()}


_own: dict[str, Entry] | None = None
_own_read = False


def own_entries() -> dict[str, Entry] | None:
    global _own, _own_read
    if not _own_read:
        _own, _own_read = _own_entries(), True
    return _own


def entries() -> dict[str, Entry]:
    """Every registered provider, fleet's own first (in declaration order), then third parties'."""
    global _entries
    if _entries is None:
        from importlib.metadata import entry_points
        own = own_entries()
        found: dict[str, Entry] = dict(own or {})
        for ep in entry_points(group=GROUP):
            if own is not None and ep.value.startswith(_OWN_PREFIX):
                continue        # fleet's own, possibly stale: the checkout's pyproject.toml decides
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            found.setdefault(ep.name, Entry(ep.name, ep.value, dist))
        _entries = found
    return _entries


def refresh() -> None:
    """Forget what was found (after installing a provider package in this process; tests)."""
    global _entries, _own_read
    _entries, _own_read = None, False
    _classes.clear()


def names(*, listed_only: bool = False) -> list[str]:
    found = list(entries())
    if listed_only:
        found = [n for n in found if getattr(provider_class(n), "listed", True)]
    return found


def provider_class(name: str) -> type:
    """The class registered as `name`; UsageError naming the registered ones if there is none."""
    if name in _classes:
        return _classes[name]
    # fleet's own names win over any third party's (see entries()), so they need no scan of every
    # installed distribution's metadata.
    entry = (own_entries() or {}).get(name) or entries().get(name)
    if entry is None:
        known = names(listed_only=True)
        import difflib
        close = difflib.get_close_matches(name, list(entries()), n=1, cutoff=0.6)
        raise UsageError(f"unknown provider {name!r}",
                         hint=f"did you mean {close[0]!r}?" if close else "choose one of: " + ", ".join(known))
    module_name, _, attr = entry.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr) if attr else importlib.import_module(module_name)
    except (ImportError, AttributeError) as exc:
        raise EnvironmentProblem(f"provider {name!r} ({entry.target}, declared by {entry.origin}) cannot be "
                                 f"loaded: {exc}", hint="reinstall the package that provides it") from None
    if getattr(cls, "name", None) != name:
        raise EnvironmentProblem(f"provider {name!r} ({entry.target}) calls itself {getattr(cls, 'name', None)!r}",
                                 hint="the entry point name and the class's `name` must agree")
    _classes[name] = cls
    return cls


def create(config: Any) -> Any:
    """The provider `config.provider` names, built from the loaded Config (its own section included)."""
    return provider_class(config.provider).from_config(config)


def get(name: str, **options: Any) -> Any:
    """A provider by name with its defaults (or `options`): what `fleet status` / `fleet down` need
    to describe and release a recorded lease."""
    cls = provider_class(name)
    return cls(**options) if options else cls.from_config(None)


def settings_classes() -> dict[str, "type[ProviderSettings]"]:
    """Provider name → the settings class of its fleet.toml section (providers with one)."""
    out = {}
    for name in entries():
        try:
            settings = getattr(provider_class(name), "settings", None)
        except EnvironmentProblem:     # a broken third-party package: reported when it is used
            continue
        if settings is not None:
            out[name] = settings
    return out


def section_owner(section: str) -> tuple[str, "type[ProviderSettings]"] | None:
    """Which provider owns the top-level fleet.toml key `section` ([aws], [[hosts]]), if any."""
    if section in entries():
        # The usual case: a section named after its provider ([slurm], [aws]). Asked first, so a
        # fleet.toml with [slurm] does not import every other provider's module (~30 ms at start).
        try:
            settings = getattr(provider_class(section), "settings", None)
        except EnvironmentProblem:
            settings = None
        if settings is not None and settings.section == section:
            return section, settings
    for name, settings in settings_classes().items():
        if settings.section == section:
            return name, settings
    return None
