"""A local lease that fails while its machines are made is cleaned up; when that clean-up fails too
(a machine directory that cannot be deleted), the user is still told why the lease failed, is
warned of what was left, and the lease's key is deleted. Before, the clean-up's error replaced the
lease's own and left the key behind. (sshd and the watchdog are stand-ins here.)"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.local import LocalProvider, sshd
from fleet.providers.local.provider import lease_key_path


def test_a_failed_clean_up_neither_hides_why_the_lease_failed_nor_keeps_its_key(fleet_home, monkeypatch, capsys):
    def start_sshd(d, machine_id, public):
        if machine_id.endswith("-n1"):
            raise RuntimeError("sshd on n1 did not start: port taken")
        return SimpleNamespace(port=22000, user="u", host_key="ssh-ed25519 AAAA", root=d / "root", pid=0,
                               isolation="pids")

    def release_dirs(self, dirs):
        raise OSError(39, "Directory not empty", str(dirs[0]))
    monkeypatch.setattr(sshd, "find_sshd", lambda: "/usr/sbin/sshd")
    monkeypatch.setattr(sshd, "start_watchdog", lambda *a, **k: 0)
    monkeypatch.setattr(sshd, "start_sshd", start_sshd)
    monkeypatch.setattr(LocalProvider, "_release_dirs", release_dirs)
    provider = LocalProvider()
    plan = make_plan(provider="local", template=provider.template("local-1gpu"), gpus=2, max_duration_s=600,
                     heartbeat_ttl_s=120, project="test", user="tester")
    lease_id = new_lease_id()
    with pytest.raises(RuntimeError, match="sshd on n1 did not start"):
        provider.lease(plan, lease_id, 120)
    assert not lease_key_path(lease_id).exists()
    warned = capsys.readouterr().err
    assert f"fleet: warning: lease {lease_id}: cleaning up after it failed:" in warned
    assert "Directory not empty" in warned and "fleet down --all" in warned
