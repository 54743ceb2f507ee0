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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import FleetError
from .sync_channel import OpenSSHChannel, ParamikoChannel, use_openssh
from .sync_remote import helper_command, helper_source, host_cache_dir

if TYPE_CHECKING:
    from ..models import Machine

CERT_VALID_S = 24 * 3600


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
            .not_valid_before(now - timedelta(minutes=10)).not_valid_after(now + timedelta(seconds=CERT_VALID_S))
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
    token: str
    channel: OpenSSHChannel | ParamikoChannel
    session: object | None = None

    def offer(self) -> dict:
        """What a fetching machine is told (over its own SSH channel)."""
        return {"host": self.host, "port": self.port, "cert": self.cert, "token": self.token}

    def close(self) -> None:
        try:
            self.channel.close()
        except (OSError, FleetError):
            pass
        finally:
            if self.session is not None:
                self.session.close()


def seed_after(machine: Machine, results: dict, cache_dir: str | None = None) -> Seed | None:
    """`machine`'s host as the seed, once it was fed (`results` holds its SyncStats); None, with the
    reason in its stats, when it was not or cannot serve: then every host is fed by the controller."""
    if machine.id not in results:
        return None
    seed, why = open_seed(machine, cache_dir)
    if seed is None:
        results[machine.id].direct_error = why
    return seed


def open_seed(machine: Machine, cache_dir: str | None = None, timeout: float = 60) -> tuple[Seed | None, str]:
    """Start serving `machine`'s host cache; (None, why) when it cannot (the run goes on without it)."""
    try:
        cert, key = one_off_tls()
    except ImportError as exc:
        return None, f"no TLS certificate could be made here ({exc})"
    token = os.urandom(32).hex()
    host = machine.rendezvous_host
    request = {"serve": {"cache": host_cache_dir(machine, cache_dir), "cert": cert, "key": key, "token": token,
                         "bind": host}}
    session = ch = None
    try:
        from ..remote.pool import pool_for
        command = helper_command(machine, cache_dir)
        if pool_for(machine.id) is not None or not use_openssh():
            from ..remote.ssh import connect          # paramiko: a run's pooled connection (closing a
            session = connect(machine, timeout=30)    # handle leaves it open), or no OpenSSH client
            ch = ParamikoChannel(session, command, timeout)
        else:
            ch = OpenSSHChannel(machine, command, timeout)
        ch.send([json.dumps(request).encode() + b"\n"])
        answer = ch.reply()
        if answer.get("helper") == "need":
            src = helper_source()
            ch.send([b"%d\n" % len(src), src])
            answer = ch.reply()
        return Seed(machine.id, host, int(answer["port"]), cert, token, ch, session), ""
    except (FleetError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        if ch is not None:
            Seed(machine.id, host, 0, cert, token, ch, session).close()
        elif session is not None:
            session.close()
        return None, f"machine {machine.id} could not serve its chunks to the other hosts: {exc}"
