"""What an experiment on node 0's team host can reach of the run's supervisor there, when `fleet up -d`
on team hosts supervises it from node 0 (tests/e2e/test_detach_node0_ssh_hosts.py): as root, the
loopback hosts' login is an unprivileged user and the supervisor login (`supervisor_login`) this
process's user with a HOME of its own, as on a team host with two accounts. The experiment finds
the supervisor's process and gets neither its environment, its directory, its code nor the lease's
key (the same attack as tests/e2e/test_node0_credentials_reach.py on AWS)."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import pytest

from tests.conftest import FLEET, run_fleet, wait_until
from tests.e2e.test_detach_node0_sandbox import _cmdline, _run_row
from tests.e2e.test_detach_node0_ssh_hosts import STORE, _env, _slots
from tests.fixtures.laptop import LAPTOP
from tests.fixtures.node0_attack import FIND_THE_SUPERVISOR
from tests.fixtures.ssh_hosts import PYTHON, started_farm, toml_hosts

pytestmark = pytest.mark.timeout(300)


# What an experiment on node 0's host tries against a supervisor there (as test_node0_credentials_reach):
# find its process, read its environment and directory (FIND_THE_SUPERVISOR), append code to a module
# of its package, read the lease's key. $1: where it may write what it got; then the supervisor
# login's HOME on each host.
ATTACK = FIND_THE_SUPERVISOR + r'''shift   # past $drop: the supervisor login's HOME on each host
for home in "$@"; do
ls "$home" >/dev/null 2>&1 && echo "listed its home"
for dir in "$home"/.fleet-supervisor/*; do
  target="$dir/pkg/fleet/report/rollup.py"
  if printf '\nopen("%s/leaked.txt", "w").write("x")\n' "$drop" >> "$target" 2>/dev/null; then echo "tampered"; fi
  if cat "$dir"/home/leases/*/id_ed25519 > "$drop/key.txt" 2>/dev/null; then echo "read the lease key"; fi
done
done
env > "$drop/env.txt"
sleep 3
echo "attack done"
'''
SECRET = "team-node0-secret-5d02e8"


@pytest.fixture
def separated_farm():
    """Two hosts whose login is an unprivileged user and whose supervisor login is this (root)
    process's user, with a HOME of its own: the team host a `supervisor_login` makes."""
    import shutil
    import tempfile
    from pathlib import Path
    from tests.e2e.test_aws_sandbox import separate_login, separate_login_name
    if os.geteuid() != 0:
        pytest.skip("two logins on the loopback hosts need root (sshd switching users)")
    base = Path(tempfile.mkdtemp(prefix="fleet-team-hosts-"))
    os.chmod(base, 0o711)
    with separate_login(separate_login_name()) as login:
        try:
            with started_farm(base, ("ha", "hb"), login_keys=True, login=login) as farm:
                yield farm, login
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_on_team_hosts_the_experiment_cannot_reach_its_supervisor_on_node0(separated_farm, tmp_path,
                                                                           postgres_url, aws_env):
    import shutil
    import tempfile
    from pathlib import Path
    farm, login = separated_farm
    env = {**_env(farm, tmp_path, postgres_url, aws_env), "AWS_SECRET_ACCESS_KEY": SECRET}
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    hosts = [replace(h, user=login, supervisor_login=me, supervisor_python=PYTHON) for h in farm.configs(gpus=1)]
    drop = Path(tempfile.mkdtemp(prefix="fleet-team-drop-"))
    os.chmod(drop, 0o1777)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "attack.sh").write_text(ATTACK)
    homes = " ".join(str(h.supervisor_home) for h in farm.hosts)   # node 0 may be either host
    (exp / "fleet.toml").write_text(
        f'project = "node0-hosts-creds"\nprovider = "ssh"\ntemplate = "hosts-1gpu"\nmax_duration = "10m"\n'
        f'python = "/usr/bin/python3"\nstore = "{STORE}"\n'
        f'command = "sh attack.sh {drop} {homes}"\n\n' + toml_hosts(hosts))
    try:
        up = subprocess.run([*LAPTOP, FLEET, "up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env,
                            capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "no supervisor login of its own" not in up.stderr, up.stderr
        handoff = json.loads(up.stdout)
        run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
        cwd = os.readlink(f"/proc/{pid}/cwd")
        assert any(cwd.startswith(str(h.supervisor_home) + "/.fleet-supervisor/") for h in farm.hosts), cwd
        assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 180)
        logs = run_fleet(["logs", run_id], cwd=exp, env=env).stdout
        row = _run_row(postgres_url, run_id)
        assert row["status"] == "succeeded", (row, logs)
        # The attack ran as the host's login and saw the supervisor's process (another user's)…
        assert f"experiment runs as {login}" in logs and "attack done" in logs, logs
        assert "supervisor found" in logs and f"user {login}" not in logs, logs
        # …and got nothing of it: not its environment, its directory, its code or the lease's key.
        for took in ("read its environment", "saw its directory", "tampered", "read the lease key", "listed its home"):
            assert took not in logs, logs
        got = "".join(p.read_text(errors="replace") for p in drop.iterdir() if p.is_file())
        assert SECRET not in got and postgres_url not in got and "AWS_SECRET_ACCESS_KEY" not in got, got
        assert "BEGIN OPENSSH PRIVATE KEY" not in got
        # Released by the supervisor: slots free, key revoked on both hosts, the supervisor gone.
        assert wait_until(lambda: not _slots(postgres_url, lease_id), 60)
        assert wait_until(lambda: not _cmdline(pid), 60), _cmdline(pid)
        for host in farm.hosts:
            assert f"fleet-lease-{lease_id}" not in host.login_keys.read_text(), host.name
    finally:
        shutil.rmtree(drop, ignore_errors=True)

