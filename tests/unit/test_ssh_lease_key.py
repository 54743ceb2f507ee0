"""A detached team-host run's lease key (fleet/providers/ssh/handoff.py): the launcher's line goes into
the login's ~/.ssh/authorized_keys beside what is there, and the release takes out that lease's
line alone; only a release of the whole lease revokes it (giving back some machines does not)."""
from __future__ import annotations

import shlex
import subprocess
from datetime import datetime, timedelta, timezone

from fleet.models import Lease, Machine
from fleet.providers.ssh import SSHHostsProvider
from fleet.providers.ssh.handoff import _INSTALL, REVOKE, key_tag

MINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMine alice@laptop"


def _sh(script: str, home) -> None:
    subprocess.run(["sh", "-c", script], env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, check=True)


def test_install_appends_and_revoke_removes_only_that_leases_line(tmp_path):
    keys = tmp_path / ".ssh" / "authorized_keys"
    keys.parent.mkdir()
    keys.write_text(MINE + "\n")
    for lease in ("l-aaaa1111", "l-bbbb2222"):
        line = f'expiry-time="20991231235959Z" ssh-ed25519 AAAA{lease} {key_tag(lease)}'
        _sh(_INSTALL.format(line=shlex.quote(line)), tmp_path)
    assert keys.read_text().count("fleet-lease-") == 2 and MINE in keys.read_text()
    _sh(REVOKE.format(tag=shlex.quote(key_tag("l-aaaa1111"))), tmp_path)
    left = keys.read_text().splitlines()
    assert left == [MINE, 'expiry-time="20991231235959Z" ssh-ed25519 AAAAl-bbbb2222 fleet-lease-l-bbbb2222']
    _sh(REVOKE.format(tag=shlex.quote(key_tag("l-cccc3333"))), tmp_path)   # absent: nothing changes
    assert keys.read_text().splitlines() == left


def test_revoke_without_an_authorized_keys_file_does_nothing(tmp_path):
    _sh(REVOKE.format(tag=shlex.quote(key_tag("l-aaaa1111"))), tmp_path)
    assert not (tmp_path / ".ssh").exists()


def test_only_the_whole_leases_release_revokes_its_key(monkeypatch, tmp_path):
    from fleet.config.model import Config
    from fleet.providers.ssh.settings import SSHSettings
    from fleet.state import open_state
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    config = Config(path=None, base_dir=tmp_path, project="p", name="p", command="true", provider="ssh",
                    template="hosts", provider_settings={"ssh": SSHSettings(hosts=[])})
    provider = SSHHostsProvider(config=config, state=open_state(f"sqlite:///{tmp_path / 'state.db'}"))
    now = datetime.now(timezone.utc)
    machines = [Machine(f"L-n{r}", "L", r, "127.0.0.1", 22, "u", "/k", "", f"/w/L-n{r}") for r in (0, 1)]
    lease = Lease(id="L", provider="ssh", template="hosts", machines=machines, created_at=now,
                  deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))
    calls = []
    monkeypatch.setattr(provider, "_stop_all", lambda ms, revoke="": calls.append(revoke) or [None for _ in ms])
    provider.release_machines(lease, ["L-n1"])
    provider.release(lease)
    assert calls == ["", "L"]
