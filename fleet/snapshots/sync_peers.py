"""Peer forwarding, the controller's side: the first host fed seeds the lease's other hosts.

Machines that share a host cache already take each chunk from it once it holds them (sync.py). For
machines on separate hosts (AWS instances, team hosts) with a store the machines cannot read
themselves (a local store; an S3 store hands out presigned GETs instead), the controller feeds one
host, then has that host serve the chunks it now holds (remote_peer.py) to the first machine of every
other host, over the lease's own network (AWS: the security group lets the fleet's machines talk;
`Machine.rendezvous_host` is the address they reach each other at). The controller's link then
carries each chunk once per lease, not once per host; what a peer could not fetch is pushed as before.

Trust: the serving host gets a certificate and key made for this one sync (never written on the
controller), the fetching machines that certificate and a random token, all over the SSH channels.
FLEET_SYNC_PEERS=0 turns it off (every host fed by the controller).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .sync_channel import OpenSSHChannel, ParamikoChannel, use_openssh
from .sync_remote import helper_command, helper_source, host_cache_dir

if TYPE_CHECKING:
    from ..models import Machine

SERVE_FOR_S = 3600      # at most: past it the seed stops and whatever is left comes from the controller
PEERS_PER_SEED = 3      # hosts one seed serves at once (FLEET_SYNC_PEERS_PER_SEED); then they serve too


def enabled() -> bool:
    return os.environ.get("FLEET_SYNC_PEERS", "1") != "0"


def one_off_tls() -> tuple[str, str]:
    """A self-signed certificate and its key (PEM), for one sync's seed; the fetching side pins it."""
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet sync seed")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=10)).not_valid_after(now + timedelta(seconds=SERVE_FOR_S + 600))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


@dataclass
class Seed:
    """A host serving its cache's chunks to the lease's other machines, for as long as `channel` is open."""
    machine_id: str
    host: str
    port: int
    cert: str
    token: str = field(repr=False)
    channel: OpenSSHChannel | ParamikoChannel | None = field(repr=False)
    session: object | None = field(default=None, repr=False)

    def offer(self) -> dict:
        """What a fetching machine is told (over its own SSH channel)."""
        return {"host": self.host, "port": self.port, "cert": self.cert, "token": self.token}

    def close(self) -> None:
        try:
            if self.channel is not None:
                self.channel.close()
        except Exception:  # noqa: BLE001 — the seed is done either way; its sshd ends the helper
            pass
        finally:
            if self.session is not None:
                self.session.close()


UNREACHABLE_FOR_S = 6 * 3600   # a seed host its peers could not reach is not asked again for this long


def _reach_path():
    from ..paths import subdir
    return subdir("cache") / "peer-reach.json"


def _read_reach() -> dict[str, float]:
    try:
        data = json.loads(_reach_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, (int, float))} \
        if isinstance(data, dict) else {}


def recently_unreachable(seed_key: str) -> bool:
    """The last sync seeded from this host cache found none of its peers able to connect (a firewall,
    separate networks): feeding every host from the controller now saves them a connection timeout.
    A hint of this computer's, forgotten after UNREACHABLE_FOR_S."""
    import time
    return time.time() - _read_reach().get(seed_key, 0) < UNREACHABLE_FOR_S


def judge_reach(seed_key: str, peer_stats: list) -> bool:
    """Remember the seed as unreachable when no peer that asked it for chunks could connect to it;
    forget it when one could. Peers that needed nothing, or whose sync failed, say nothing about it.
    Returns whether it was found unreachable."""
    import time
    asked = [s for s in peer_stats if s is not None and (s.bytes_peer or s.direct_error)]
    if not asked:
        return False
    unreachable = all(not s.bytes_peer and (s.direct_error or "").startswith("unreachable") for s in asked)
    now = time.time()
    reach = {k: v for k, v in _read_reach().items() if now - v < UNREACHABLE_FOR_S}    # expired: forgotten
    if not unreachable and seed_key not in reach:
        return False                   # reachable, and nothing remembered to forget
    reach.pop(seed_key, None)
    if unreachable:
        reach[seed_key] = now          # (again: a seed found unreachable once more is skipped anew)
    from .host_hints import write_hints
    write_hints(_reach_path(), reach)   # not written: the next sync costs one timeout, nothing more
    return unreachable


def peers_per_seed() -> int:
    try:
        return max(1, int(os.environ.get("FLEET_SYNC_PEERS_PER_SEED", PEERS_PER_SEED)))
    except ValueError:
        return PEERS_PER_SEED


def relay(first: SeedDial, results: dict, peers: list[Machine], others: list[Machine], snapshots: list[str],
          feed, seed_key: str, cache_dir: str | None = None, needs=lambda m: set(),
          rest_of=lambda m: []) -> set[str]:
    """Feed the first machines of the other hosts in rounds, each host that has been fed serving the
    next: every seed serves at most peers_per_seed() hosts a round, so no host's link carries more
    than that many copies at once and the hosts holding the data grow (1+k)-fold a round (k = 3:
    1, 4, 16, 64 hosts). `peers` need only what the first host holds; `others` (they need more) are
    fed by the controller in the first round. `feed(machines, offer_for)` syncs them and waits.
    Only a host that needed every one of `snapshots` (`needs(machine)`) serves a later round (a seed
    serves its snapshots' chunks or nothing). A host that cannot serve, or a first seed none could
    reach, leaves the rest to the controller. The other machines of a host fed (`rest_of`, copying
    from their host's cache) are fed with the next round, not after the last; returns their ids."""
    from concurrent.futures import ThreadPoolExecutor

    from ..parallel import submit_or_thread   # at interpreter shutdown: on plain threads
    seeds: list[Seed] = []
    dials, pending, batch_others, first_round = [first], list(peers), list(others), True
    rests = list(rest_of(first.machine))      # copy from a host cache already filled
    fed: set[str] = set()
    try:
        while pending or batch_others:
            for dial in dials:
                seed = seed_after(dial, results, pending, snapshots)
                if seed is not None:
                    seeds.append(seed)
            batch = pending[:len(seeds) * peers_per_seed()] if seeds else pending
            pending = pending[len(batch):]
            offers = {m.id: seeds[i % len(seeds)] for i, m in enumerate(batch)} if seeds else {}
            every = set(snapshots)     # the next round's seeds, dialled while they are fed:
            to_dial = [m for m in batch if needs(m) >= every] if pending else []
            dials = []
            with ThreadPoolExecutor(max_workers=max(1, min(8, len(to_dial)))) as dialer:
                dialling = [submit_or_thread(dialer, SeedDial, m, cache_dir) for m in to_dial]
                try:
                    feed(batch + batch_others + rests, lambda m: offers[m.id].offer() if m.id in offers else None)
                finally:
                    dials = [f.result() for f in dialling]
            fed.update(m.id for m in rests)
            rests = [r for m in batch + batch_others if m.id in results for r in rest_of(m)]
            batch_others = []
            for m in batch:
                if m.id in offers and m.id in results:
                    results[m.id].peer_seed = offers[m.id].machine_id
            if first_round and seeds and judge_reach(seed_key, [results.get(m.id) for m in batch]):
                for seed in seeds + dials:     # the hosts cannot reach each other: the controller feeds the rest
                    seed.close()
                seeds, dials = [], []
            seeds = _still_serving(seeds, offers, results)
            first_round = False
    finally:
        for seed in seeds + dials:
            seed.close()
    feed(rests)
    return fed | {m.id for m in rests}


def _still_serving(seeds: list[Seed], offers: dict[str, Seed], results: dict) -> list[Seed]:
    """The seeds worth offering again: one that every peer it was offered to (and that asked it)
    could not reach has died or lost its network since it was dialled, and would cost the next
    round's peers a connection timeout each before the controller fed them anyway."""
    kept = []
    for seed in seeds:
        asked = [results[mid] for mid, s in offers.items() if s is seed and mid in results
                 and (results[mid].bytes_peer or results[mid].direct_error)]
        if asked and all(not st.bytes_peer and (st.direct_error or "").startswith("unreachable") for st in asked):
            seed.close()
        else:
            kept.append(seed)
    return kept


def seed_after(dial: SeedDial, results: dict, peers: list[Machine], snapshots: list[str]) -> Seed | None:
    """The dialled host as the seed for `peers`, serving the chunks of `snapshots` (what they need),
    once its machine was fed (`results` holds its SyncStats); None when it was not, when its targets were current already (a no-op re-sync: the
    other hosts are most likely current too, and a server would only cost them time), or, with the
    reason in its stats, when it cannot serve: then every host is fed by the controller."""
    stats = results.get(dial.machine.id)
    if stats is None or not peers or (stats.targets_current and not stats.targets_written):
        dial.close()
        return None
    seed = dial.serve(allow=[m.rendezvous_host for m in peers], snapshots=snapshots)
    if seed is None:
        stats.direct_error = dial.why
    return seed


def _ip_literals(addresses: list[str]) -> list[str] | None:
    """The addresses, when every one is an IP address (what the server sees connecting); None (no
    allow-list, the token alone) when one is a name, which only the machines' own DNS can resolve."""
    import ipaddress
    try:
        return sorted({str(ipaddress.ip_address(a)) for a in addresses})
    except ValueError:
        return None


def _per_address(addresses: list[str]) -> int:
    """Connections one address may hold at the seed: every fetcher's workers of the machines that
    share it (machines of one host, or behind one NAT, which names can hide), and no more."""
    import ipaddress
    from collections import Counter

    from .remote_peer import PEER_WORKERS
    try:
        seen = Counter(str(ipaddress.ip_address(a)) for a in addresses)     # as the server sees them
    except ValueError:
        return PEER_WORKERS * max(1, len(addresses))
    return PEER_WORKERS * max(seen.values(), default=1)


class SeedDial:
    """A seed's channel and credentials, made while its host is still being fed (they cost a key
    exchange, a login and a helper start, and a key pair: a few hundred ms off the critical path);
    `serve` then starts the server. Never raises: `why` says what went wrong."""

    def __init__(self, machine: Machine, cache_dir: str | None = None, timeout: float = 60):
        self.machine, self.cache_dir = machine, cache_dir
        self.ch: OpenSSHChannel | ParamikoChannel | None = None
        self.session = None
        self.why = ""
        try:
            self.cert, self.key = one_off_tls()
            self.token = os.urandom(32).hex()
            from ..remote.pool import pool_for
            command = helper_command(machine, cache_dir)
            if pool_for(machine.id) is not None or not use_openssh():
                from ..remote.ssh import connect          # paramiko: a run's pooled connection (closing a
                self.session = connect(machine, timeout=30)   # handle leaves it open), or no OpenSSH
                self.ch = ParamikoChannel(self.session, command, timeout)
            else:
                self.ch = OpenSSHChannel(machine, command, timeout)
        except Exception as exc:  # noqa: BLE001 — paramiko's own errors too: no seed is never a failed sync
            self._failed(exc)

    def serve(self, allow: list[str] | None = None, snapshots: list[str] | None = None) -> Seed | None:
        """Serve the chunks of `snapshots` from the host's cache to `allow` (addresses); None (and
        `why`) when it cannot."""
        if self.ch is None:
            return None
        m = self.machine
        request = {"serve": {"cache": host_cache_dir(m, self.cache_dir), "cert": self.cert, "key": self.key,
                             "token": self.token, "bind": m.rendezvous_host, "allow": _ip_literals(allow or []),
                             "per_address": _per_address(allow or []), "snapshots": sorted(snapshots or ()),
                             "deadline_s": SERVE_FOR_S}}
        try:
            self.ch.send([json.dumps(request).encode() + b"\n"])
            answer = self.ch.reply()
            if answer.get("helper") == "need":
                src = helper_source()
                self.ch.send([b"%d\n" % len(src), src])
                answer = self.ch.reply()
            if "port" not in answer:
                raise RuntimeError(answer.get("error") or "no port in its answer")
            seed = Seed(m.id, m.rendezvous_host, int(answer["port"]), self.cert, self.token, self.ch, self.session)
            self.ch = self.session = None          # the seed's now: it closes them
            return seed
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return None

    def _failed(self, exc: BaseException) -> None:
        self.why = f"machine {self.machine.id} could not serve its chunks to the other hosts: {exc}"
        self.close()

    def close(self) -> None:
        """End the dialled channel unused (the helper sees its input end before any request)."""
        ch, session, self.ch, self.session = self.ch, self.session, None, None
        if ch is not None or session is not None:
            Seed(self.machine.id, "", 0, "", "", ch, session).close()
