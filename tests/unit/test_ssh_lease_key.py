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


def test_a_login_is_revoked_once_no_machine_of_the_lease_stays_there(monkeypatch, tmp_path):
    # Machines given back early (a sweep's pool) leave the lease's machine list: a login they were
    # the last on would otherwise keep accepting the key until its expiry.
    from fleet.config.model import Config
    from fleet.providers.ssh import handoff
    from fleet.providers.ssh import provider as ssh_provider
    from fleet.providers.ssh.settings import SSHSettings
    from fleet.state import open_state
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    config = Config(path=None, base_dir=tmp_path, project="p", name="p", command="true", provider="ssh",
                    template="hosts", provider_settings={"ssh": SSHSettings(hosts=[])})
    provider = SSHHostsProvider(config=config, state=open_state(f"sqlite:///{tmp_path / 'state.db'}"))
    now = datetime.now(timezone.utc)
    hosts = {0: "127.0.0.1", 1: "127.0.0.1", 2: "127.0.0.2"}      # n0 and n1 share a login
    machines = [Machine(f"L-n{r}", "L", r, hosts[r], 22, "u", "/k", "", f"/w/L-n{r}") for r in hosts]
    lease = Lease(id="L", provider="ssh", template="hosts", machines=machines, created_at=now,
                  deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))
    stopped, revoked = [], []
    monkeypatch.setattr(ssh_provider, "stop_machine", lambda m: stopped.append(m.id))
    monkeypatch.setattr(handoff, "revoke_lease_key", lambda m, lease_id: revoked.append((m.host, lease_id)))
    provider.release_machines(lease, ["L-n1"])          # n0 stays on that login: the key stays there
    assert stopped == ["L-n1"] and revoked == []
    provider.release_machines(lease, ["L-n2"])          # the last on 127.0.0.2: revoked there
    assert revoked == [("127.0.0.2", "L")]
    provider.release(lease)                             # the whole lease: every login, after its stops
    assert sorted(revoked[1:]) == [("127.0.0.1", "L"), ("127.0.0.2", "L")]

LEASE = "l-aaaa1111"
OURS = f'expiry-time="20991231235959Z" ssh-ed25519 AAAAlease {key_tag(LEASE)}'


def _install(home, line: str = OURS) -> None:
    _sh(_INSTALL.format(line=shlex.quote(line)), home)


def _revoke(home, lease: str = LEASE, path: str = "/usr/bin:/bin") -> None:
    subprocess.run(["sh", "-c", REVOKE.format(tag=shlex.quote(key_tag(lease)))],
                   env={"HOME": str(home), "PATH": path}, check=True)


def _keys(tmp_path, text: bytes):
    keys = tmp_path / ".ssh" / "authorized_keys"
    keys.parent.mkdir(exist_ok=True)
    keys.write_bytes(text)
    return keys


def test_a_file_without_a_final_newline_keeps_its_last_key_through_install_and_revoke(tmp_path):
    # Appended straight after "…alice@laptop" the lease's line would become the tail of the user's
    # own line, and the revoke would then take the user's key out with it.
    keys = _keys(tmp_path, MINE.encode())
    _install(tmp_path)
    assert keys.read_text().splitlines() == [MINE, OURS]
    _revoke(tmp_path)
    assert keys.read_text().splitlines() == [MINE]


def test_a_crlf_file_is_left_byte_for_byte(tmp_path):
    original = (MINE + "\r\n" + "ssh-rsa AAAAother bob@desk\r\n").encode()
    keys = _keys(tmp_path, original)
    _install(tmp_path)
    _revoke(tmp_path)
    assert keys.read_bytes() == original


def test_revoke_takes_only_fleets_own_line_for_that_exact_lease(tmp_path):
    # The lease id is not a pattern ("." matches any character in grep), and a user's own line that
    # merely ends with the tag (no expiry-time option first: not what fleet writes) is not fleet's.
    others = [f'expiry-time="20991231235959Z" ssh-ed25519 AAAAx {key_tag("l-aaaaX111")}',
              f"ssh-ed25519 AAAAmine {key_tag('l-aaaa.111')}"]
    keys = _keys(tmp_path, ("\n".join([MINE, *others]) + "\n").encode())
    _install(tmp_path, OURS.replace(LEASE, "l-aaaa.111"))
    _revoke(tmp_path, "l-aaaa.111")
    assert keys.read_text().splitlines() == [MINE, *others]


def test_revoke_keeps_a_linked_file_a_link_with_its_mode(tmp_path):
    target = tmp_path / "managed" / "keys"
    target.parent.mkdir()
    target.write_text(MINE + "\n")
    target.chmod(0o640)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "authorized_keys").symlink_to(target)
    _install(tmp_path)
    _revoke(tmp_path)
    assert (tmp_path / ".ssh" / "authorized_keys").is_symlink()
    assert target.read_text() == MINE + "\n" and oct(target.stat().st_mode & 0o777) == oct(0o640)


def test_a_revoke_whose_copy_fails_leaves_the_file_as_it_was(tmp_path):
    # A full disk while the copy without the lease's line is written: the copy is cut short, and
    # copying it over the file would lose the user's keys. A stand-in awk/grep fails like that.
    keys = _keys(tmp_path, (MINE + "\n" + "ssh-rsa AAAAother bob@desk\n").encode())
    _install(tmp_path)
    before = keys.read_bytes()
    shims = tmp_path / "shims"
    shims.mkdir()
    for tool in ("awk", "grep"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        shim = shims / tool
        # Asked to write the copy: 20 bytes of it, then "No space left" (the presence checks run as they are).
        shim.write_text(f'#!/bin/sh\n"{real}" "$@" | head -c 20\n'
                        f'echo "{tool}: write error: No space left on device" >&2\n'
                        f'case "$*" in *-q*|*exit*) "{real}" "$@" >/dev/null; exit $? ;; esac\nexit 2\n')
        shim.chmod(0o755)
    subprocess.run(["sh", "-c", REVOKE.format(tag=shlex.quote(key_tag(LEASE)))],
                   env={"HOME": str(tmp_path), "PATH": f"{shims}:/usr/bin:/bin"})
    assert keys.read_bytes() == before


def test_a_lease_id_that_would_add_a_line_or_an_option_is_refused_before_any_host_is_touched():
    import types

    import pytest

    from fleet.errors import UsageError
    from fleet.providers.ssh.handoff import SSHHandoff
    lease = types.SimpleNamespace(id="l-x\nssh-ed25519 AAAAevil", machines=[], max_deadline=datetime.now(timezone.utc))
    with pytest.raises(UsageError):
        SSHHandoff().lease_key(lease, None, None)


def test_the_host_scripts_hold_no_bang_for_a_csh_login_shell():
    # sshd runs the command through the login's own shell; csh/tcsh (common on HPC hosts) expands
    # `!` history even inside single quotes, which would break the revoke and leave the key there.
    for script in (_INSTALL.format(line=shlex.quote(OURS)), REVOKE.format(tag=shlex.quote(key_tag(LEASE)))):
        assert "!" not in shlex.join(["sh", "-c", script])


def test_concurrent_installs_and_revokes_of_many_leases_lose_no_line(tmp_path):
    # Leases of one login start and end at the same time: each edit holds the lock (flock), so no
    # rewrite puts back a file read before another lease's line went in.
    from concurrent.futures import ThreadPoolExecutor
    keys = _keys(tmp_path, (MINE + "\n").encode())
    first = [f"l-{i:08x}" for i in range(8)]
    second = [f"l-{i:08x}" for i in range(8, 16)]
    line = lambda lease: OURS.replace(LEASE, lease)   # noqa: E731
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda lease: _install(tmp_path, line(lease)), first))
    jobs = [(_revoke, lease) for lease in first[:4]] + [(lambda home, lease: _install(home, line(lease)), lease)
                                                        for lease in second]
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda job: job[0](tmp_path, job[1]), jobs))
    assert sorted(keys.read_text().splitlines()) == sorted([MINE] + [line(x) for x in first[4:] + second])
