"""Each lease its own rendezvous port and its own Python environment (issue 13), through the real CLI."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import processes_under, run_fleet, start_fleet_up

# Rank 0 listens on MASTER_ADDR:MASTER_PORT; the other ranks connect and exchange their run id.
# Every master holds its port until the masters of all runs have bound theirs (a barrier in a
# shared directory), so the groups certainly overlap in time, however loaded the machine is.
RENDEZVOUS = r'''
import os, socket, sys, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
run, addr, port = os.environ["FLEET_RUN_ID"], os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
barrier, runs = os.environ["BARRIER_DIR"], int(os.environ["BARRIER_RUNS"])
deadline = time.monotonic() + 240
print(f"port={port} rank={rank} world={world} local={os.environ['LOCAL_RANK']}/{os.environ['LOCAL_WORLD_SIZE']}"
      f" node={os.environ['NODE_RANK']}", flush=True)
if rank == 0:
    server = socket.socket()
    try:
        server.bind((addr, port))
    except OSError as exc:
        open(os.path.join(barrier, f"failed-{run}"), "w").close()
        sys.exit(f"bind {addr}:{port}: {exc}")
    server.listen(world)
    open(os.path.join(barrier, f"bound-{run}"), "w").close()
    while len([n for n in os.listdir(barrier) if n.startswith("bound-")]) < runs:
        if time.monotonic() > deadline or any(n.startswith("failed-") for n in os.listdir(barrier)):
            sys.exit("the other run's master never bound its port")
        time.sleep(0.05)
    server.settimeout(max(1.0, deadline - time.monotonic()))
    peers = []
    for _ in range(world - 1):
        conn, _ = server.accept()
        peers.append(conn.makefile().readline().split())
        conn.sendall(f"{run}\n".encode())
        conn.close()
    foreign = [p for p in peers if p[0] != run]
    print(f"group {run} peers {sorted(int(p[1]) for p in peers)} foreign {foreign}", flush=True)
    sys.exit(1 if foreign else 0)
else:
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    conn.sendall(f"{run} {rank}\n".encode())
    master_run = conn.makefile().readline().strip()
    print(f"joined {master_run}", flush=True)
    sys.exit(0 if master_run == run else 1)
'''


def _summary(out: str) -> dict:
    return json.loads(out[out.rindex("\n{") + 1:] if "\n{" in out else out[out.index("{"):])


def test_two_concurrent_multi_node_runs_on_one_host_each_form_their_own_group(tmp_path, fleet_home):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    experiments = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "rendezvous.py").write_text(RENDEZVOUS)
        (d / "fleet.toml").write_text(
            f'project = "rdv-{name}"\ntemplate = "local-1gpu"\ncommand = "python rendezvous.py"\n'
            f'max_duration = "10m"\n[env]\nBARRIER_DIR = "{barrier}"\nBARRIER_RUNS = "2"\n')
        experiments.append(d)
    procs = [start_fleet_up(d, ["--gpus", "2", "--json"]) for d in experiments]   # both at the same time
    try:
        outs = [p.communicate(timeout=420)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    summaries = [_summary(o) for o in outs]
    ports = set()
    for out, summary in zip(outs, summaries):
        run = summary["run_id"]
        assert f"[0] group {run} peers [1] foreign []" in out, out
        assert f"[1] joined {run}" in out, out
        [port] = {line.split("port=")[1].split()[0] for line in out.splitlines() if "port=" in line}
        assert f"[0] port={port} rank=0 world=2 local=0/1 node=0" in out, out
        assert f"[1] port={port} rank=1 world=2 local=0/1 node=1" in out, out
        ports.add(port)
    assert len(ports) == 2, outs
    assert processes_under(fleet_home) == []


def test_a_kept_lease_keeps_its_rendezvous_port_for_fleet_run(experiment, fleet_home):
    cmd = ["sh", "-c", "echo port=$MASTER_PORT fleet=$FLEET_MASTER_PORT addr=$MASTER_ADDR"]
    first = run_fleet(["up", "--gpus", "2", "--keep", "5m", "--json", "--", *cmd], cwd=experiment)
    assert first.returncode == 0, first.stderr
    lease_id = _summary(first.stdout)["lease_id"]
    try:
        again = run_fleet(["run", lease_id, "--json", "--", *cmd], cwd=experiment)
        assert again.returncode == 0, again.stderr
        logs = [run_fleet(["logs", _summary(p.stdout)["run_id"]], cwd=experiment).stdout for p in (first, again)]
        ports = {m for text in logs for m in re.findall(r"\] port=(\d+) ", text)}
        assert len(ports) == 1 and len(re.findall(r"\] port=(\d+) ", "".join(logs))) == 4, logs
        [port] = ports
        assert f"[1] port={port} fleet={port} addr=127.0.0.1" in logs[1]
    finally:
        assert run_fleet(["down", lease_id], cwd=experiment).returncode == 0


def test_a_kept_lease_whose_port_was_taken_meanwhile_hands_fleet_run_another(experiment, fleet_home):
    """The claim in fleet's state binds nothing: between runs on a kept lease any program (another
    FLEET_HOME's run, a previous master's connection in TIME_WAIT, a squatter) may take the port.
    It was handed to the next run anyway: rank 0 died with EADDRINUSE, the other ranks connected
    to whatever listened there."""
    import socket
    first = run_fleet(["up", "--gpus", "2", "--keep", "5m", "--json", "--", "sh", "-c", "echo port=$MASTER_PORT"],
                      cwd=experiment)
    assert first.returncode == 0, first.stderr
    lease_id = _summary(first.stdout)["lease_id"]
    bind = ["python3", "-c", "import os, socket; s = socket.socket(); rank = os.environ['RANK']\n"
            "if rank == '0': s.bind((os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']))); s.listen()\n"
            "print('bound' if rank == '0' else 'sees', os.environ['MASTER_PORT'])"]
    squatter = socket.socket()
    try:
        [port] = set(re.findall(r"\] port=(\d+)", first.stderr + first.stdout))
        squatter.bind(("", int(port)))
        squatter.listen()
        again = run_fleet(["run", lease_id, "--json", "--", *bind], cwd=experiment, check_no_traceback=False)
        assert again.returncode == 0, again.stderr
        [moved] = set(re.findall(r"\[0\] bound (\d+)", again.stderr + again.stdout))
        assert moved != port
        assert (f"rendezvous port {port} on 127.0.0.1 is in use (another program, or a previous run's connection "
                f"still closing): this run gets MASTER_PORT {moved}") in again.stderr
        squatter.close()
        third = run_fleet(["run", lease_id, "--json", "--", *bind], cwd=experiment)   # the lease keeps the new one
        assert third.returncode == 0, third.stderr
        assert f"[0] bound {moved}" in third.stderr + third.stdout and "is in use" not in third.stderr
        assert f"[1] sees {moved}" in third.stderr + third.stdout
    finally:
        squatter.close()
        assert run_fleet(["down", lease_id], cwd=experiment).returncode == 0


def test_a_master_port_given_in_env_is_said_to_be_unused(experiment, fleet_home):
    """fleet's MASTER_PORT, RANK, ... win over [env] and --env (a fixed port would bring back the
    collisions between runs on one host), but a user who set them was not told theirs went unused.
    A secret named in `secrets` and given a fallback in [env] is the user's, not fleet's: not named."""
    (experiment / "fleet.toml").write_text('project = "t"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
                                           'command = "true"\nsecrets = ["WANDB_API_KEY"]\n[env]\nMASTER_PORT = "80"\n'
                                           'LR = "3e-4"\nPYTHONUNBUFFERED = "1"\nWANDB_API_KEY = "offline-fallback"\n')
    proc = run_fleet(["up", "--gpus", "2", "--env", "RANK=7", "--", "sh", "-c", "echo port=$MASTER_PORT rank=$RANK"],
                     cwd=experiment, env={"WANDB_API_KEY": "wandb-" + "k3y" * 8})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("fleet: warning: MASTER_PORT, RANK given in [env] or --env are set by fleet for each "
                             "process (its rendezvous, ranks and directories): not used") == 1, proc.stderr
    out = proc.stdout + proc.stderr
    assert "[1] port=80 " not in out and re.search(r"\[1\] port=\d+ rank=1\n", out), out


def _wheel(directory: Path, name: str, version: str = "0.1") -> Path:
    """A minimal pure-Python wheel, made by hand: no build backend, no index, no network."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"WHERE = 'installed by setup'\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: fleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


PKG = "fleet_isolation_probe_pkg"


@pytest.fixture
def fleet_venv_stays_clean():
    """Fleet's own interpreter must never see the package; should a broken fleet install it there
    anyway, take it out again so that one failure does not leak into every later test."""
    def importable() -> bool:
        return subprocess.run([sys.executable, "-c", f"import {PKG}"], capture_output=True).returncode == 0
    assert not importable()
    yield importable
    if importable():
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", PKG], capture_output=True)


def test_setup_installs_into_the_lease_venv_never_fleets_and_the_next_lease_reuses_it(
        experiment, fleet_home, tmp_path, fleet_venv_stays_clean):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _wheel(wheels, PKG)
    (experiment / "requirements.txt").write_text(f"{PKG}\n")
    (experiment / "probe.sh").write_text(
        "which python\n"
        "echo prefix=$(python -c 'import sys; print(sys.prefix)')\n"
        f"python -c 'import {PKG}; print({PKG}.WHERE)'\n"
        "ls $VIRTUAL_ENV | grep made-by-\n"
        "python -c 'import json, os; print(\"source=\" + json.load(open(os.environ[\"VIRTUAL_ENV\"]"
        " + \"/.fleet-pyenv.json\"))[\"source\"])'\n")
    (experiment / "fleet.toml").write_text(
        'project = "t"\ntemplate = "local-1gpu"\nmax_duration = "10m"\ncommand = "sh probe.sh"\n'
        f'setup = "python -m pip install -q --no-index --find-links {wheels} -r requirements.txt'
        ' && touch $VIRTUAL_ENV/made-by-$FLEET_LEASE_ID"\n')
    assert wheel.exists()
    outs = []
    for _ in range(2):
        proc = run_fleet(["up", "--gpus", "2", "--json"], cwd=experiment, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        summary = _summary(proc.stdout)
        logs = run_fleet(["logs", summary["run_id"]], cwd=experiment).stdout
        outs.append((summary["lease_id"], logs))
    fleet_prefix = str(Path(sys.prefix).resolve())
    (first_lease, first), (second_lease, second) = outs
    for lease_id, logs in outs:
        for rank in (0, 1):
            env_dir = str(fleet_home / "machines" / f"{lease_id}-n{rank}" / "root" / "pyenv")
            assert f"[{rank}] {env_dir}/bin/python" in logs, logs           # `which python`: the lease's venv
            assert f"[{rank}] prefix={env_dir}" in logs, logs
            assert f"[{rank}] installed by setup" in logs, logs             # the run imports what setup installed
        assert fleet_prefix not in logs
    assert not fleet_venv_stays_clean(), "setup installed into fleet's own virtualenv"
    # The first lease made its venv fresh; the second cloned the one the first lease's setup left
    # in the host's cache (its marker file came along) and then ran its own setup in its own copy.
    assert "[0] source=fresh" in first and "[0] source=cached" in second, (first, second)
    assert f"[0] made-by-{first_lease}" in second and f"[0] made-by-{second_lease}" in second, second
    # One entry for the setup (set-<hash> entries keep package sets for reruns: docs/environment.md).
    [entry] = [d for d in (fleet_home / "cache" / "pyenv").iterdir()
               if d.is_dir() and not d.name.startswith(("base-", "set-"))]
    assert (entry / f"made-by-{first_lease}").exists()
    assert not (entry / f"made-by-{second_lease}").exists()   # a lease's changes stay in its own venv
    assert processes_under(fleet_home) == []


def test_a_lease_writing_into_its_venv_in_place_cannot_reach_a_later_lease(experiment, fleet_home):
    """A lease's venv is a copy of the host cache's entry, never hard links to it: the first lease
    rewrites its bin/pip in place (the same inode, not a replacement) after its setup was cached, and
    the next lease on the host, cloned from that entry, runs the pip it should."""
    (experiment / "poison.sh").write_text(
        "echo \"pip says: $(pip --version 2>&1 | head -n 1)\"\n"
        "python - <<'PY'\n"
        "import os\n"
        "pip = os.path.join(os.environ['VIRTUAL_ENV'], 'bin', 'pip')\n"
        "links = os.stat(pip).st_nlink\n"
        "with open(pip, 'r+') as fh:\n"
        "    fh.write('#!/bin/sh\\necho INJECTED-BY-AN-EARLIER-LEASE\\n')\n"
        "    fh.truncate()\n"
        "print(f'rewrote pip in place, links={links}')\n"
        "PY\n")
    (experiment / "fleet.toml").write_text(
        'project = "t"\ntemplate = "local-1gpu"\nmax_duration = "10m"\ncommand = "sh poison.sh"\nsetup = "true"\n')
    logs = []
    for _ in range(2):
        proc = run_fleet(["up", "--json"], cwd=experiment, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        logs.append(run_fleet(["logs", _summary(proc.stdout)["run_id"]], cwd=experiment).stdout)
    first, second = logs
    assert "rewrote pip in place" in first, first
    assert "INJECTED" not in second, second
    assert re.search(r"pip says: pip \d", second), second         # the real pip ran in the next lease
    assert "rewrote pip in place, links=1" in first, first        # the lease's pip was its own file
    entries = [d for d in (fleet_home / "cache" / "pyenv").iterdir()
               if d.is_dir() and not d.name.startswith(("base-", "set-", "."))]
    assert len(entries) == 1, entries                             # the first lease's setup was cached...
    assert "INJECTED" not in (entries[0] / "bin" / "pip").read_text()   # ...and is unchanged
    # Written into directly (as the host's user can): the next lease discards it, says so once.
    pip = entries[0] / "bin" / "pip"
    pip.parent.chmod(0o755)
    pip.chmod(0o755)
    pip.write_text("#!/bin/sh\necho INJECTED-INTO-THE-CACHE\n")
    proc = run_fleet(["up", "--json"], cwd=experiment, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count(f"discarded the host's cached Python environment {entries[0].name}") == 1, proc.stderr
    third = run_fleet(["logs", _summary(proc.stdout)["run_id"]], cwd=experiment).stdout
    assert "INJECTED" not in third and re.search(r"pip says: pip \d", third), third
    assert processes_under(fleet_home) == []
