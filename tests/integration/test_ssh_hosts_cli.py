"""`fleet hosts` and `fleet up` on SSH hosts, as a user types them (the CLI in subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from fleet.errors import ExitCode
from fleet.providers.ssh.hosts import fingerprint
from fleet.state import open_state
from tests.conftest import FLEET, processes_under, run_fleet
from tests.fixtures.ssh_hosts import PYTHON, HostFarm, toml_hosts


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = HostFarm(tmp_path_factory.mktemp("cli-hosts"))
    for i in range(2):
        farm.start(f"c{i}")
    yield farm
    farm.stop()
    assert not processes_under(farm.base / "hosts")


@pytest.fixture
def env(farm, tmp_path):
    return {"HOME": str(farm.home), "FLEET_HOME": str(tmp_path / "fleet-home"), "FLEET_USER": "carol",
            "FLEET_STATE_URL": ""}


def test_add_pins_the_shown_key_and_ls_marks_down_hosts(farm, env, tmp_path):
    extra = farm.start("gone")
    port, key = extra.port, str(farm.key)
    # no known_hosts entry and no terminal: refuse, showing the fingerprint to check
    home = tmp_path / "fresh-home"
    (home / ".ssh").mkdir(parents=True)
    bare = {**env, "HOME": str(home)}
    args = ["hosts", "add", "127.0.0.1", "--name", "gone", "--port", str(port), "--key", key, "--gpus", "2",
            "--workdir", str(extra.leases_dir)]
    refused = run_fleet(args, cwd=tmp_path, env=bare)
    shown = fingerprint(extra.host_key)
    assert refused.returncode == ExitCode.USAGE and shown in refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("fleet: error:")
    wrong = run_fleet(args + ["--trust", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], cwd=tmp_path, env=bare)
    assert wrong.returncode == ExitCode.INFRASTRUCTURE and "refusing" in wrong.stderr
    added = run_fleet(args + ["--trust", shown, "--json"], cwd=tmp_path, env=bare)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["host_key"].split()[1] == extra.host_key.split()[1]
    assert not (home / ".ssh" / "known_hosts").exists()        # pinned in fleet's inventory, not learnt
    again = run_fleet(args + ["--yes"], cwd=tmp_path, env=bare)
    assert again.returncode == ExitCode.USAGE and "already exists" in again.stderr

    listed = json.loads(run_fleet(["hosts", "ls", "--json"], cwd=tmp_path, env=bare).stdout)["hosts"]
    assert [(h["name"], h["status"], h["gpus"], h["slots_free"]) for h in listed] == [("gone", "up", 2, 2)]
    extra.kill_sshd()
    listed = json.loads(run_fleet(["hosts", "ls", "--json"], cwd=tmp_path, env=bare).stdout)["hosts"]
    assert listed[0]["status"] == "down" and listed[0]["status_detail"]
    table = run_fleet(["hosts", "ls", "--no-probe"], cwd=tmp_path, env=bare)
    assert "DOWN" in table.stdout
    assert run_fleet(["hosts", "rm", "gone"], cwd=tmp_path, env=bare).returncode == 0
    missing = run_fleet(["hosts", "rm", "gone"], cwd=tmp_path, env=bare)
    assert missing.returncode == ExitCode.NOT_FOUND and "no host 'gone'" in missing.stderr


def _experiment(tmp_path, farm, command: str, state_url: str = "") -> str:
    d = tmp_path / "exp"
    d.mkdir(exist_ok=True)
    team = f'state_url = "{state_url}"\n' if state_url else ""
    (d / "fleet.toml").write_text(
        f'project = "team"\ncommand = "{command}"\nprovider = "ssh"\ntemplate = "hosts"\n{team}'
        f'max_duration = "10m"\npython = "{PYTHON}"\n\n' + toml_hosts(farm.configs(farm.hosts[:2])))
    return str(d)


@pytest.fixture
def state_url(postgres_url):
    """Team mode: the CLI-level race runs on PostgreSQL (the library-level one covers both stores)."""
    return postgres_url


def test_concurrent_fleet_up_on_two_hosts_serves_or_refuses_cleanly(farm, env, tmp_path, state_url):
    """6 × `fleet up --gpus 2` against 2 hosts × 4 slots: at most 4 hold GPUs at once.

    The database is named only by `state_url` in fleet.toml (team mode as configured)."""
    d = _experiment(tmp_path, farm, "echo CVD=$CUDA_VISIBLE_DEVICES; sleep 2", state_url)
    procs = [subprocess.Popen([FLEET, "up", "--gpus", "2", "--ci"], cwd=d, env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    served = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] != 0]
    assert len(served) >= 4, [r[2][-300:] for r in refused]
    for code, _, err in refused:
        assert code == ExitCode.INFRASTRUCTURE, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("fleet: error:") and "not enough free GPU slots" in last and "Traceback" not in err
    for _, out, err in served:
        cvd = [line.split("CVD=")[1] for line in (out + err).splitlines() if line.startswith("[0] CVD=")]
        assert len(cvd) == 1 and len(cvd[0].split(",")) == 2, out + err
    too_big = run_fleet(["up", "--gpus", "6", "--ci"], cwd=d, env=env)     # no host has 6 GPUs
    assert too_big.returncode == ExitCode.INFRASTRUCTURE
    assert too_big.stderr.strip().splitlines()[-1].startswith("fleet: error: not enough free GPU slots")
    status = json.loads(run_fleet(["status", "--json", "--all-users"], cwd=d, env=env).stdout)
    assert status["leases"] == []                                  # everything released
    store = open_state(state_url)
    try:
        db = store.db
        assert db.execute("SELECT COUNT(*) AS n FROM gpu_slots WHERE released_at IS NULL")[0]["n"] == 0
        assert db.execute("SELECT DISTINCT owner FROM gpu_slots") == [{"owner": "carol"}]
        runs = db.execute("SELECT owner, status FROM runs")
        assert len(runs) == len(served) + len(refused) + 1 and {r["owner"] for r in runs} == {"carol"}
        assert store.list_users() and store.list_users()[0]["name"] == "carol"
    finally:
        store.close()


def test_add_an_ssh_config_alias_with_its_key_from_known_hosts(farm, env, tmp_path):
    """`Host gpubox` in ~/.ssh/config names address, port, user and key; known_hosts vouches for it."""
    host = farm.hosts[0]
    home = tmp_path / "alias-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host gpubox\n    HostName 127.0.0.1\n    Port {host.port}\n    User root\n    IdentityFile {farm.key}\n")
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{host.port} {host.host_key}\n")
    aliased = {**env, "HOME": str(home)}
    added = run_fleet(["hosts", "add", "gpubox", "--gpus", "4", "--workdir", str(host.leases_dir), "--json"],
                      cwd=tmp_path, env=aliased)
    assert added.returncode == 0, added.stderr
    assert "from ~/.ssh/known_hosts" in added.stderr
    row = json.loads(added.stdout)
    assert (row["name"], row["address"], row["status"], row["gpus"]) == ("gpubox", "gpubox", "up", 4)
    # a host whose key known_hosts contradicts is refused, whatever the flags say
    other = farm.hosts[1]
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{other.port} {host.host_key}\n")
    forged = run_fleet(["hosts", "add", "127.0.0.1", "--name", "x", "--port", str(other.port), "--key",
                        str(farm.key), "--yes"], cwd=tmp_path, env=aliased)
    assert forged.returncode == ExitCode.INFRASTRUCTURE and "possible impersonation" in forged.stderr


def test_add_a_host_without_gpus_is_refused_and_a_declared_model_is_kept(farm, env, tmp_path):
    """No nvidia-smi on the host and no --gpus: one line saying so, nothing stored (it used to be
    added as "None GPU(s)"); --gpus with --gpu-model is stored and shown."""
    host = farm.hosts[1]
    home = tmp_path / "gpus-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{host.port} {host.host_key}\n")
    bare = {**env, "HOME": str(home)}
    base = ["hosts", "add", "127.0.0.1", "--name", "nogpu", "--port", str(host.port), "--key", str(farm.key),
            "--workdir", str(host.leases_dir)]
    refused = run_fleet(base, cwd=tmp_path, env=bare)
    assert refused.returncode == ExitCode.USAGE, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "fleet: error: host nogpu: no GPUs found there (no nvidia-smi?); nothing was added (give the count "
        "with --gpus N (and the model with --gpu-model, e.g. A100-80GB))")
    assert "None" not in refused.stdout + refused.stderr
    assert json.loads(run_fleet(["hosts", "ls", "--json", "--no-probe"], cwd=tmp_path, env=bare).stdout)["hosts"] == []
    added = run_fleet(base + ["--gpus", "2", "--gpu-model", "L4"], cwd=tmp_path, env=bare)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added nogpu: ") and ", 2 GPU(s) (L4), key SHA256:" in added.stdout
    assert run_fleet(["hosts", "rm", "nogpu"], cwd=tmp_path, env=bare).returncode == 0


def test_one_machine_is_not_enrolled_twice_and_a_workdir_must_be_absolute(farm, env, tmp_path):
    """The same machine added under a second name (or through an alias) had each GPU given to two
    leases at once; a workdir like ../../x made every lease fail and left a directory at the root."""
    host = farm.hosts[1]
    home = tmp_path / "dup-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{host.port} {host.host_key}\n")
    bare = {**env, "HOME": str(home)}

    def add(name: str, *extra: str):
        return run_fleet(["hosts", "add", "127.0.0.1", "--name", name, "--port", str(host.port), "--key",
                          str(farm.key), "--gpus", "1", *extra], cwd=tmp_path, env=bare)
    for workdir in ("../../x", "relative/dir", "/scratch/../etc"):
        refused = add("bad", "--workdir", workdir)
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        assert refused.stderr.strip().splitlines()[-1].startswith("fleet: error: host --workdir must be an absolute "
                                                                   "path or one under ~/, without '..'")
    first = add("one", "--workdir", str(host.leases_dir))
    assert first.returncode == 0, first.stderr
    again = add("two", "--workdir", str(host.leases_dir))
    assert again.returncode == ExitCode.USAGE, again.stderr
    assert "host 'two' is host 'one' again (the same host key)" in again.stderr
    names = [h["name"] for h in json.loads(run_fleet(["hosts", "ls", "--json", "--no-probe"], cwd=tmp_path,
                                                       env=bare).stdout)["hosts"]]
    assert names == ["one"]
    assert run_fleet(["hosts", "rm", "one"], cwd=tmp_path, env=bare).returncode == 0


def test_machine_root_is_the_lease_directory_on_ssh_hosts(farm, env, tmp_path):
    """FLEET_MACHINE_ROOT was empty on ssh machines: it names the machine's own directory on the host."""
    d = _experiment(tmp_path, farm, "echo root=$FLEET_MACHINE_ROOT; test -d $FLEET_MACHINE_ROOT")
    up = run_fleet(["up", "--gpus", "1", "--ci"], cwd=d, env=env, timeout=180)
    assert up.returncode == 0, up.stderr
    roots = [line.split("root=", 1)[1] for line in (up.stdout + up.stderr).splitlines() if line.startswith("[0] root=")]
    assert len(roots) == 1, up.stdout + up.stderr
    assert any(roots[0].startswith(str(h.leases_dir) + "/") for h in farm.hosts[:2]), roots   # <workdir>/<lease>/<machine>
