"""One machine known under two names: each name holds its own GPU slots, so its GPUs would be handed
out twice (a teammate's fleet.toml with `name = "gpu1"` and another's with no name, so `gpu1.lab`;
one `[[hosts]]` entry repeated under another name; a `[[hosts]]` entry for a host added with
`fleet hosts add`). `fleet hosts add` refuses such a host; a lease refuses to start while two
usable names are one machine, by the rule `fleet hosts add` applies: the same SSH endpoint (after
~/.ssh/config) or the same pinned host key."""
from __future__ import annotations

from ...errors import UsageError
from .hosts import Host, ssh_config_for


def _endpoint(h: Host) -> tuple[str, int] | None:
    try:
        cfg = ssh_config_for(h.address)
    except UsageError:
        cfg = {}
    try:
        return (str(cfg.get("hostname") or h.address).lower(), int(h.port or cfg.get("port") or 22))
    except (TypeError, ValueError):
        return None


def refuse_aliases(hosts: list[Host]) -> None:
    """Raise (one line) when two of `hosts` are one machine."""
    seen: dict[object, str] = {}
    for h in sorted(hosts, key=lambda h: h.name):
        keys = [("at", _endpoint(h))]
        if h.host_key:
            keys.append(("key", " ".join(h.host_key.split()[:2])))
        for kind, key in keys:
            if key is None:
                continue
            other = seen.setdefault((kind, key), h.name)
            if other != h.name:
                why = "the same host key" if kind == "key" else "the same address ({}:{})".format(*key)
                raise UsageError(f"hosts {other!r} and {h.name!r} are one machine ({why}): its GPUs would be "
                                 "given out twice; nothing was leased",
                                 hint=f"give it one name in every fleet.toml, or `fleet hosts rm {h.name}` if that "
                                      "name is stale")
