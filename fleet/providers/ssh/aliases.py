"""One machine known under two names: each name holds its own GPU slots, so its GPUs would be handed
out twice (a teammate's fleet.toml with `name = "gpu1"` and another's with no name, so `gpu1.lab`;
one `[[hosts]]` entry repeated under another name; a `[[hosts]]` entry for a host added with
`fleet hosts add`). `fleet hosts add` refuses such a host and a lease refuses to start while two
usable names are one machine: the same pinned host key, or the same SSH endpoint after ~/.ssh/config
(address, port and the jump or proxy that reaches it: one private address in two sites behind two
bastions is two machines) unless both have pinned keys and they differ."""
from __future__ import annotations

from itertools import combinations

from ...errors import UsageError
from .hosts import Host, ssh_config_for


def _endpoint(h: Host) -> tuple[str, int, str] | None:
    try:
        cfg = ssh_config_for(h.address)
    except UsageError:
        cfg = {}
    via = cfg.get("proxyjump") or cfg.get("proxycommand") or ""
    try:
        return (str(cfg.get("hostname") or h.address).lower(), int(h.port or cfg.get("port") or 22), str(via))
    except (TypeError, ValueError):
        return None


def _pinned(h: Host) -> str:
    return " ".join((h.host_key or "").split()[:2])


def one_machine(a: Host, b: Host, places: dict[str, tuple[str, int, str] | None] | None = None) -> str | None:
    """Why `a` and `b` are one machine ("the same host key", "the same address (…)"), or None.
    `places` caches endpoints by host name across many pairs."""
    ka, kb = _pinned(a), _pinned(b)
    if ka and kb:
        return "the same host key" if ka == kb else None
    place = places[a.name] if places is not None else _endpoint(a)
    other = places[b.name] if places is not None else _endpoint(b)
    if place is None or place != other:
        return None
    return f"the same address ({place[0]}:{place[1]}{' via ' + place[2] if place[2] else ''})"


def refuse_aliases(hosts: list[Host]) -> None:
    """Raise (one line) when two of `hosts` are one machine."""
    places = {h.name: _endpoint(h) for h in hosts}
    for a, b in combinations(sorted(hosts, key=lambda h: h.name), 2):
        why = one_machine(a, b, places)
        if why:
            raise UsageError(f"hosts {a.name!r} and {b.name!r} are one machine ({why}): its GPUs would be "
                             "given out twice; nothing was leased",
                             hint=f"give it one name in every fleet.toml, or `fleet hosts rm {b.name}` if that "
                                  "name is stale")
