"""`fleet hosts add` refuses a malformed --trust or a --key that is a directory before dialling the
host: it connected first and then said the host "offers host key …, not garbage" (exit 10)."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.providers.ssh.enrol import enrol
from fleet.providers.ssh.hosts import Host


class _NoInventory:
    def list(self):
        raise AssertionError("the inventory was read: the flags were not checked first")


@pytest.mark.parametrize("trust", ["garbage", "SHA256:short", "MD5:aa:bb", ""])
def test_a_malformed_trust_is_refused_before_connecting(trust):
    with pytest.raises(UsageError, match="is not a host key fingerprint"):
        enrol(_NoInventory(), Host(name="h", address="127.0.0.1", port=1), trust=trust)


def test_a_key_that_is_a_directory_is_refused_before_connecting(tmp_path):
    with pytest.raises(UsageError, match="is a directory, not a private key file"):
        enrol(_NoInventory(), Host(name="h", address="127.0.0.1", port=1, key_path=str(tmp_path)))


def test_a_well_formed_fingerprint_passes_the_flag_check():
    with pytest.raises(AssertionError, match="the inventory was read"):
        enrol(_NoInventory(), Host(name="h", address="127.0.0.1", port=1), trust="SHA256:" + "A" * 43)
