"""The login's home on a team host, where `workdir` defaults under it (~/.fleet-leases).

The hosts table is shared by the team, but teammates reach a `[[hosts]]` entry with logins of their
own (no `user`: each one's own name; or a `user` in each one's fleet.toml), so the home a probe wrote
there is any prober's: a teammate's probe within the last 30 s once put this user's lease under the
teammate's home (where the workdir check refused it). Only a host enrolled with `fleet hosts add
--user` is reached by one login for all; for every other the home is kept here, under this
FLEET_HOME, per host, login and local user."""
from __future__ import annotations

import getpass
import json
from functools import lru_cache
from pathlib import Path

from .hosts import Host


def _path() -> Path:
    from ...paths import subdir
    return subdir("cache") / "host-homes.json"


def _key(h: Host) -> str:
    try:
        me = getpass.getuser()
    except Exception:  # noqa: BLE001
        me = "?"
    return f"{h.name}|{h.address}|{h.port or 22}|{h.login or ''}|{me}"


def _read() -> dict[str, str]:
    try:
        st = _path().stat()
    except OSError:
        return {}
    return _parsed(str(_path()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _parsed(path: str, _mtime_ns: int, _size: int) -> dict[str, str]:
    """Read once while unchanged: a lease asks for every host's home several times."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}


def home_of(h: Host) -> str:
    """The home this user's login has on `h` ("" when unknown: the host is probed again)."""
    if _one_login(h):
        return h.home or ""
    return _read().get(_key(h), "")


def _one_login(h: Host) -> bool:
    return h.source != "config" and bool(h.login)


def remember(learnt: list[tuple[Host, str]]) -> None:
    """Homes this process's probes learnt, for the hosts not reached by one login for all."""
    mine = {_key(h): home for h, home in learnt if home and not _one_login(h)}
    if mine:
        from ...snapshots.host_hints import write_hints
        write_hints(_path(), {**_read(), **mine})   # a copy: the cached dict is never changed
