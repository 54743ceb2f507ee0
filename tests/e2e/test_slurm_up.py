"""`fleet up --provider slurm` as a user types it, against the real test cluster (tests/fixtures/slurm.py):
a 2-node run whose ranks form a TCP rendezvous group, queueing, --wait, the budget stop, and a
controller SIGKILLed while the allocation's time limit and `fleet down` still do their jobs."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from fleet.providers.slurm.parsing import JobState
from tests.conftest import run_fleet, start_fleet_up, wait_for_line, wait_until
from tests.fixtures.slurm import job_processes, wait_for

pytestmark = pytest.mark.timeout(420)

RENDEZVOUS = r'''
import os, socket, time
rank, world = int(os.environ["FLEET_RANK"]), int(os.environ["FLEET_WORLD_SIZE"])
addr, port = os.environ["FLEET_MASTER_ADDR"], int(os.environ["FLEET_MASTER_PORT"])
out = os.environ["FLEET_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
if rank == 0:
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port)); srv.listen(world); srv.settimeout(120)
    peers = [0]
    for _ in range(world - 1):
        conn, _ = srv.accept(); peers.append(int(conn.recv(16).decode())); conn.sendall(b"ok"); conn.close()
    group = ",".join(str(p) for p in sorted(peers))
else:
    for _ in range(600):
        try:
            c = socket.create_connection((addr, port), timeout=5); break
        except OSError:
            time.sleep(0.2)
    c.sendall(str(rank).encode()); assert c.recv(2) == b"ok"; c.close()
    group = "joined"
print(f"rank {rank}/{world} gpus={os.environ['CUDA_VISIBLE_DEVICES']} group={group}", flush=True)
open(os.path.join(out, f"rank-{rank}.txt"), "w").write(group + "\n")
'''


@pytest.fixture
def slurm_exp(experiment, slurm_env, fleet_home, tmp_path):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (experiment / "rendezvous.py").write_text(RENDEZVOUS)

    def write(command: str = "python3 rendezvous.py", *, price: str = "2", max_duration: str = "10m",
              extra: str = "") -> Path:
        (experiment / "fleet.toml").write_text(
            f'project = "t"\ncommand = "{command}"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\n'
            f'max_duration = "{max_duration}"\n{extra}\n'
            f'[slurm]\nworkdir = "{nodes}"\nprice_per_gpu_hour = {price}\npoll = 0.5\n')
        return experiment
    write()
    return write


def slurm(cluster) -> SlurmCommands:
    return SlurmCommands(LocalRunner(cluster.env))


def jobs_of(cluster, lease_id: str):
    return [j for j in slurm(cluster).queue() if j.comment == f"fleet:lease={lease_id}"]


def test_up_two_nodes_form_a_rendezvous_group_logs_by_rank_outputs_home(slurm_exp, slurm_env, fleet_home):
    exp = slurm_exp()
    proc = run_fleet(["up", "--gpus", "2", "--json"], cwd=exp, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["status"] == "succeeded" and summary["machines"] == 2 and summary["provider"] == "slurm"
    run_dir = Path(summary["run_dir"])
    logs = {p.name: p.read_text() for p in (run_dir / "logs").iterdir()}
    text = "".join(logs.values())
    assert "rank 0/2 gpus=0 group=0,1" in text and "rank 1/2 gpus=0 group=joined" in text, logs
    assert len([n for n in logs if n.endswith(".log")]) >= 2, logs
    assert (run_dir / "node-0" / "rank-0.txt").read_text() == "0,1\n"
    assert (run_dir / "node-1" / "rank-1.txt").read_text() == "joined\n"
    # Slurm bills fleet nothing: [slurm] price_per_gpu_hour is a shadow price, counted but never called spent.
    assert summary.get("cost_usd") is None and float(summary["would_cost_usd"]) > 0, summary
    from fleet.money.ledger import Ledger
    from fleet.state import open_state
    entries = Ledger(open_state().db).read(lease_id=summary["lease_id"]).entries
    assert entries and all(e.shadow for e in entries) and "shadow" in entries[0].price_source
    # The allocation is gone, and accounting saw 2 GPUs for it.
    live = [j for j in jobs_of(slurm_env, summary["lease_id"]) if j.state in (JobState.RUNNING, JobState.PENDING)]
    assert not live, live
    assert wait_until(lambda: all(j.state.finished for j in jobs_of(slurm_env, summary["lease_id"])), 60, 0.5)
    acct = slurm(slurm_env).accounting([j.job_id for j in jobs_of(slurm_env, summary["lease_id"])])
    assert acct and acct[0].gpus == 2 and acct[0].state is JobState.CANCELLED


def test_second_run_pends_with_its_reason_then_runs_when_the_first_ends(slurm_exp, slurm_env, fleet_home):
    exp = slurm_exp()
    first = start_fleet_up(exp, ["--gpus", "4", "-t", "slurm-2gpu", "--", "sleep", "20"])
    try:
        wait_for_line(first, "run: sleep 20", timeout=180)
        second = run_fleet(["up", "--gpus", "1", "--wait", "5m", "--", "echo", "second"], cwd=exp, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "pending (Resources)" in second.stderr, second.stderr[-3000:]
        assert first.wait(120) == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            run_fleet(["down", "--all"], cwd=exp)


def test_wait_expiring_exits_10_and_leaves_nothing_queued(slurm_exp, slurm_env, fleet_home):
    exp = slurm_exp()
    first = start_fleet_up(exp, ["--gpus", "4", "-t", "slurm-2gpu", "--", "sleep", "60"])
    try:
        wait_for_line(first, "run: sleep 60", timeout=180)
        second = run_fleet(["up", "--gpus", "1", "--wait", "3s", "--json"], cwd=exp, timeout=180)
        assert second.returncode == 10, second.stderr[-2000:]
        last = [ln for ln in second.stderr.splitlines() if ln.strip()][-1]
        assert "still pending" in last and "Resources" in last and "nothing is left queued" in last, last
        queued = [j for j in slurm(slurm_env).queue() if j.state.queued]
        assert not queued, queued
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.wait(120)


def test_budget_stop_scancels_within_5_seconds(slurm_exp, slurm_env, fleet_home):
    # $360 per GPU-hour: 2 GPUs burn $0.20/s; $3 crosses about 15 s in (Slurm bills from 1 s, no minute minimum).
    exp = slurm_exp("sleep 300", price="360", extra='[budgets]\ngrace = "1s"\n')
    proc = start_fleet_up(exp, ["--gpus", "2", "--budget", "3"])
    try:
        wait_for_line(proc, "stopping the run", timeout=240)
        crossed = time.monotonic()
        ours = [j for j in slurm(slurm_env).queue() if j.comment.startswith("fleet:lease=")]
        assert ours, "the run's allocation is not in the queue"
        assert wait_until(lambda: all(j.state is not JobState.RUNNING
                                      for j in jobs_of(slurm_env, ours[0].comment.split("=", 1)[1])), 30, 0.1)
        took = time.monotonic() - crossed
        assert took <= 5.0, f"scancel came {took:.1f}s after the budget crossing"
    finally:
        if proc.poll() is None and not wait_until(lambda: proc.poll() is not None, 120):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(120) == 11


@pytest.mark.slow
def test_controller_sigkilled_job_ends_at_its_time_limit_and_down_bills_it(slurm_exp, slurm_env, fleet_home):
    exp = slurm_exp("sleep 600", max_duration="1m")
    proc = start_fleet_up(exp, ["--gpus", "1"], env={"FLEET_HEARTBEAT_TTL": "10m"})
    wait_for_line(proc, "run: sleep 600", timeout=180)
    os.killpg(proc.pid, signal.SIGKILL)         # the controller, with no chance to release
    proc.wait()
    lease = json.loads(run_fleet(["status", "--json"], cwd=exp).stdout)["leases"][0]
    [job] = jobs_of(slurm_env, lease["id"])
    assert job.time_limit_s == 60
    # The machine's own watchdog would end it at its deadline too; kill it to show the time limit alone does.
    for pid in _watchdogs(lease["id"]):
        os.kill(pid, signal.SIGKILL)
    # slurmctld checks limits every 30 s (PERIODIC_TIMEOUT, not configurable): 60-90 s after the start.
    assert wait_until(lambda: all(j.state.finished for j in jobs_of(slurm_env, lease["id"])), 240, 1)
    assert [j.state for j in jobs_of(slurm_env, lease["id"])] == [JobState.TIMEOUT]
    assert wait_until(lambda: not job_processes(slurm_env, job.job_id), 60, 0.5), "the job's processes outlived it"
    [acct] = wait_for(lambda: slurm(slurm_env).accounting([job.job_id]), 60, "the job's accounting record")
    assert acct.state is JobState.TIMEOUT and acct.time_limit_s == 60 and 60 <= acct.elapsed_s < 200, acct
    down = run_fleet(["down", lease["id"]], cwd=exp)
    assert down.returncode == 0, down.stderr
    from fleet.money.ledger import Ledger
    from fleet.state import open_state
    entries = Ledger(open_state().db).read(lease_id=lease["id"]).entries
    billed_s = sum(e.seconds for e in entries)
    assert entries and entries[-1].kind == "close"
    assert abs(billed_s - acct.elapsed_s) <= 30, (billed_s, acct.elapsed_s)


def _watchdogs(lease_id: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"watchdog" in cmd and any(a.startswith(f"{lease_id}-n".encode()) for a in cmd):
                found.append(int(name))
    return found
