"""Every key fleet.toml accepts (and `fleet init` writes) is read by some code outside the config
package: a key that validates but changes nothing (`[aws] region`, `profile`, `stack_outputs` once
were) fails here, naming itself. The check is by name: the key's target attribute must appear as an
attribute (`config.cache_max`) or as a string (`getattr(config, "cache_dir")`, `aws.get("stack_dir")`)
in a module other than the config package and the section's own settings module. A name that
other code also uses for something else (`region`) passes whether or not the key is read: this
catches keys nothing reads by any name (`profile`, `stack_outputs`), not every dead key."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from fleet.config.schema import TABLES, TOP_LEVEL, provider_sections

PACKAGE = Path(__file__).resolve().parents[2] / "fleet"


def _sources() -> dict[str, str]:
    return {str(p): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")
            if "config" not in p.relative_to(PACKAGE).parts[:1]}


def _read_somewhere(name: str, sources: dict[str, str], exclude: str = "") -> bool:
    pattern = re.compile(rf"\.{name}\b|[\"']{name}[\"']")
    return any(pattern.search(text) for path, text in sources.items() if path != exclude)


def test_every_key_is_read_by_the_code_that_it_configures():
    sources = _sources()
    unread = [k for k, key in TOP_LEVEL.items() if not _read_somewhere(key.target or k, sources)]
    unread += [f"[{t}] {k}" for t, (_, keys) in TABLES.items() for k, key in keys.items()
               if not _read_somewhere(key.target or k, sources)]
    for section, settings in provider_sections(listed_only=True).items():
        own = str(Path(inspect.getsourcefile(settings)).resolve())
        unread += [f"[{section}] {k}" for k, key in settings.keys.items()
                   if not _read_somewhere(key.target or k, sources, exclude=own)]
    assert unread == [], f"keys fleet accepts but no code reads: {unread}"
