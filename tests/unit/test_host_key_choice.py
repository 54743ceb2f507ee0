"""The host-key trust decision of `fleet hosts add`, as a library call (fleet/providers/ssh/enrol.py):
known_hosts decides, then a given fingerprint, then --yes, then the user; never silently."""
from __future__ import annotations

import base64
import hashlib

import pytest

from fleet.errors import InfrastructureError, UsageError
from fleet.providers.ssh.enrol import choose_host_key

OFFERED = "ssh-ed25519 " + base64.b64encode(b"offered-key").decode()
OTHER = "ssh-ed25519 " + base64.b64encode(b"another-key").decode()
RSA = "ssh-rsa " + base64.b64encode(b"rsa-key").decode()


def fp(key: str) -> str:
    digest = hashlib.sha256(base64.b64decode(key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def choose(**kw):
    args = {"offered": OFFERED, "known": None, "trust": None, "accept": False, "confirm": None, **kw}
    return choose_host_key("gpu1:22", **args)


def test_known_hosts_decides_and_a_different_key_of_its_type_is_refused():
    assert choose(known=OFFERED + " comment").source == "known_hosts"
    assert choose(known=RSA).key == RSA                       # another type: the probe checks the known key
    with pytest.raises(InfrastructureError, match="possible impersonation"):
        choose(known=OTHER, accept=True)


def test_a_given_fingerprint_must_match():
    assert fp(OFFERED) == choose(accept=True).fingerprint
    assert choose(trust=f" {fp(OFFERED)} ").source == "fingerprint"
    with pytest.raises(InfrastructureError, match="refusing"):
        choose(trust=fp(OTHER), accept=True)


def test_without_a_rule_the_user_is_asked_or_the_command_refuses():
    asked = []
    choice = choose(confirm=lambda where, kind, shown: asked.append((where, kind, shown)) or True)
    assert choice.source == "confirmed" and asked == [("gpu1:22", "ssh-ed25519", fp(OFFERED))]
    with pytest.raises(UsageError, match="not trusted"):
        choose(confirm=lambda *a: False)
    with pytest.raises(UsageError) as err:
        choose()                                              # not interactive: the hint names the flag
    assert f"--trust {fp(OFFERED)}" in err.value.hint
    assert choose(accept=True).key == OFFERED
