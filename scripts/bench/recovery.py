#!/usr/bin/env python3
"""Managed runs: how fast a run resumes after losing a machine, and what a checkpoint upload sends.

1. Resume after a loss vs a fresh `fleet up` of the same size (2 one-GPU local machines), both as
   whole `fleet up` processes in one FLEET_HOME, interleaved:
   - fresh: from the process start to the first rank line of the experiment;
   - resume: from the moment node 1's machine is killed (its sshd and every process of it, as a
     host failure would; `recovery = "always"`, `checkpoint_interval = "1s"`) to the first rank
     line of attempt 2 on new machines (the other rank stopped and checkpointed, outputs and
     ledger closed, machines released, new ones leased, checkpoints restored, inputs staged).
   Target: resume ≤ 2× fresh. This is the local provider's vanished machine.
2. The same on the AWS sandbox (scripts/aws_sandbox.py: moto + loopback sshd machines), 2 spot
   machines (aws-1gpu): from the moment the sandbox serves one instance's spot interruption notice
   (its reclaim follows 20 s later; 8 s with --quick) to the first rank line of attempt 2 on new
   spot machines, vs a fresh `fleet up --provider aws --gpus 2` from start to first rank line.
   Target ≤ 2×.
3. `fleet up -d --gpus 2`: from the line saying staging is done to the launcher's exit (the run
   goes on in its supervisor; the bench then follows it to its end with `fleet attach`). Target ≤ 3 s.
4. Checkpoint upload: a 200 MiB checkpoint on a local machine is uploaded once, then 5 % of it is
   rewritten and it is uploaded again; figure = bytes sent / bytes changed (target ≤ 2), for 5 %
   as one contiguous region and as 10 scattered 1 MiB regions. Upload times are informative.

    python scripts/bench/recovery.py [-n 5] [--quick] [--json]

--quick: one sample of each, no warming runs, an 8 s spot reclaim, a 20 MiB checkpoint, resumed
attempts that end 5 steps past their checkpoint (checks the bench, not figures to quote).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (bench_parser, check_samples, clean_env, emit, exit_code, failed_row,  # noqa: E402
                     fleet_argv, json_stdout, load_row, median_row, ratio_row, row, say)

TRAIN = '''
import json, os, pathlib, signal, sys, time
ck = pathlib.Path(os.environ["FLEET_CHECKPOINT_DIR"]) / "state.json"
step = json.loads(ck.read_text())["step"] if ck.exists() else 0
print(f"attempt {os.environ['FLEET_ATTEMPT']} from {step}", flush=True)
def save():
    tmp = ck.with_suffix(".tmp"); tmp.write_text(json.dumps({"step": step})); os.replace(tmp, ck)
def stop(*_):
    save(); sys.exit(143)
signal.signal(signal.SIGTERM, stop)
last = int(sys.argv[1])
if len(sys.argv) > 2 and os.environ["FLEET_ATTEMPT"] != "1":
    last = min(last, step + int(sys.argv[2]))   # --quick: a resumed attempt shows it goes on, then ends
while step < last:
    step += 1; save(); time.sleep(0.1)
'''
CONFIG = ('project = "bench"\ntemplate = "local-1gpu"\nmax_duration = "10m"\ncommand = "python train.py 60{after}"\n'
          'checkpoint_interval = "1s"\nrecovery = "{recovery}"\n')
QUICK = {"after": ""}   # --quick sets " 5": attempt 2, once seen, needs no 6 s of training to its end


class Lines:
    """A `fleet up` process whose output lines are read on a thread, with the time each arrived."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[tuple[float, str]] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), line))

    def wait_for(self, needle: str, timeout: float = 180) -> float:
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            for at, line in self.lines[seen:]:
                seen += 1
                if needle in line:
                    return at
            if self.proc.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.02)
        tail = "".join(line for _, line in self.lines[-8:])
        raise RuntimeError(f"never saw {needle!r}: {tail[-600:]}")

    def finish(self, timeout: float = 180) -> None:
        self.proc.wait(timeout=timeout)
        self._t.join(timeout=10)


def fresh_up(exp: Path, env: dict) -> float:
    (exp / "fleet.toml").write_text(CONFIG.format(recovery="never", **QUICK))
    run = Lines([*fleet_argv(), "up", "--gpus", "2", "--", "python", "train.py", "5"], exp, env)
    first = run.wait_for("] attempt 1")
    run.finish()
    return first - run.start


def resume_after_loss(exp: Path, env: dict, home: Path) -> float:
    from fleet.providers.local.sshd import stop_machine_dir
    (exp / "fleet.toml").write_text(CONFIG.format(recovery="always", **QUICK))
    run = Lines([*fleet_argv(), "up", "--gpus", "2"], exp, env)
    try:
        run.wait_for("] attempt 1")
        run.wait_for("fleet: checkpoint:")
        [machine] = [d for d in (home / "machines").iterdir() if d.name.endswith("-n1")]
        lost_at = time.perf_counter()
        stop_machine_dir(machine, grace_s=0.1)
        resumed = run.wait_for("] attempt 2")
        run.finish()
        if run.proc.returncode != 0:
            raise RuntimeError(f"the resumed run exited {run.proc.returncode}")
        return resumed - lost_at
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


class AWSSandbox:
    """scripts/aws_sandbox.py in the background, its exports read; stopped on exit."""

    def __init__(self, home: Path):
        import signal as _signal
        self._signal = _signal
        env = {k: v for k, v in clean_env(FLEET_HOME=str(home)).items() if not k.startswith("AWS_")}
        self.home = home
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "aws_sandbox.py")],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        exports = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("export "):
                key, _, value = line[len("export "):].strip().partition("=")
                exports[key] = value.strip("'")
            if line.startswith("# sandbox ready"):
                break
        if "AWS_ENDPOINT_URL" not in exports:
            self.stop()
            raise RuntimeError("the AWS sandbox did not start (moto[server] installed?)")
        self.env = {**env, **exports}

    def ec2(self):
        import boto3
        return boto3.client("ec2", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                            aws_access_key_id="sandbox", aws_secret_access_key="sandbox")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self._signal.SIGTERM)
            self.proc.wait(timeout=60)


AWS_CONFIG = ('project = "bench"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
              'command = "python train.py 40{after}"\nrecovery = "spot"\n')


def detach_return(exp: Path, env: dict) -> float:
    (exp / "fleet.toml").write_text(CONFIG.format(recovery="never", **QUICK))
    run = Lines([*fleet_argv(), "up", "-d", "--gpus", "2", "--", "python", "train.py", "20"], exp, env)
    staged = run.wait_for("stage: pinned inputs")
    run.finish()
    returned = time.perf_counter()
    text = "".join(line for _, line in run.lines)
    if run.proc.returncode != 0 or " detached on lease " not in text:
        raise RuntimeError(f"fleet up -d exited {run.proc.returncode}: {text[-400:]}")
    run_id = text.split("fleet: run ")[-1].split()[0]
    subprocess.run([*fleet_argv(), "attach", run_id], cwd=exp, env=env, capture_output=True, timeout=300, check=True)
    return returned - staged


def aws_fresh(exp: Path, box: AWSSandbox) -> float:
    (exp / "fleet.toml").write_text(AWS_CONFIG.format(**QUICK))
    run = Lines([*fleet_argv(), "up", "--gpus", "2", "--", "python", "train.py", "5"], exp, box.env)
    first = run.wait_for("] attempt 1")
    run.finish()
    return first - run.start


def aws_notice(exp: Path, box: AWSSandbox, reclaim_after_s: float) -> float:
    from fleet.providers.aws.sandbox import Sandbox
    (exp / "fleet.toml").write_text(AWS_CONFIG.format(**QUICK))
    run = Lines([*fleet_argv(), "up", "--gpus", "2"], exp, box.env)
    try:
        run.wait_for("] attempt 1")
        ec2 = box.ec2()
        running = [i["InstanceId"] for r in ec2.describe_instances(Filters=[
            {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"] for i in r["Instances"]]
        noticed_at = time.perf_counter()
        reclaim = Sandbox(root=box.home / "aws-sandbox" / "machines").interrupt(sorted(running)[0], ec2,
                                                                             after_s=reclaim_after_s)
        resumed = run.wait_for("] attempt 2")
        run.finish()
        reclaim.join(timeout=60)
        if run.proc.returncode != 0:
            raise RuntimeError(f"the resumed run exited {run.proc.returncode}")
        return resumed - noticed_at
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


def aws_rows(samples: int, root: Path, *, quick: bool = False) -> list[dict]:
    exp = root / "aws-exp"
    exp.mkdir()
    (exp / "train.py").write_text(TRAIN)
    box = AWSSandbox(root / "aws-home")
    try:
        box.env["FLEET_GRACE"] = "10"
        # The reclaim comes 20 s after the notice (8 s in --quick, as the e2e tests have it: the
        # bench waits it out after each sample).
        reclaim_after_s = 8 if quick else 20
        fresh, resumed = [], []
        if not quick:
            aws_fresh(exp, box)   # warming
        for i in range(samples):
            pair = [lambda: fresh.append(aws_fresh(exp, box)),
                    lambda: resumed.append(aws_notice(exp, box, reclaim_after_s))]
            for step in (pair if i % 2 == 0 else pair[::-1]):
                step()
        return [median_row("AWS sandbox: fresh fleet up --gpus 2 (spot): start to first rank line", fresh, "s",
                           digits=2),
                median_row("AWS sandbox: spot notice to first rank line of attempt 2", resumed, "s", digits=2),
                ratio_row("AWS sandbox: spot notice to resumed vs a fresh up (2 machines)", resumed, fresh, "<= 2")]
    finally:
        box.stop()


def _union(regions: list[tuple[int, int]]) -> int:
    """Bytes rewritten: the regions' union (scattered regions may overlap)."""
    total, end = 0, -1
    for at, n in sorted(regions):
        start = max(at, end)
        if at + n > start:
            total += at + n - start
        end = max(end, at + n)
    return total


def upload_ratios(size: int, samples: int, home: Path) -> list[dict]:
    os.environ["FLEET_HOME"] = str(home)
    from fleet.ids import new_lease_id
    from fleet.plan import make_plan
    from fleet.providers.local import LocalProvider
    from fleet.run.checkpoints import checkpoint_dir, prepare, upload
    from fleet.snapshots import open_store
    provider = LocalProvider()
    plan = make_plan(provider="local", template=provider.template("local-1gpu"), gpus=1, max_duration_s=1800,
                     heartbeat_ttl_s=1800, project="bench", user="bench")
    lease = provider.lease(plan, new_lease_id(), 1800)
    rows = []
    try:
        store = open_store(str(home / "store"))
        prepare(lease, store, "r-bench", None)
        m = lease.machines[0]
        path = Path(checkpoint_dir(m, "r-bench")) / "model.bin"
        data = bytearray(os.urandom(size))
        path.write_bytes(data)
        t0 = time.perf_counter()
        first = upload(m, store, "r-bench")
        rows.append(row(f"first upload of a {size >> 20} MiB checkpoint", round(time.perf_counter() - t0, 2), "s",
                        sent_mib=round(first.bytes_sent / (1 << 20), 1)))
        changed = size // 20
        for kind in ("contiguous", "scattered"):
            ratios, times = [], []
            for _ in range(samples):
                if kind == "contiguous":
                    at = random.randrange(0, size - changed)
                    regions = [(at, changed)]
                else:
                    piece = changed // 10
                    regions = [(random.randrange(0, size - piece), piece) for _ in range(10)]
                for at, n in regions:
                    data[at:at + n] = os.urandom(n)
                path.write_bytes(data)
                t0 = time.perf_counter()
                up = upload(m, store, "r-bench")
                times.append(time.perf_counter() - t0)
                ratios.append(up.bytes_sent / _union(regions))
            rows.append(median_row(f"checkpoint upload, 5 % changed ({kind}): bytes sent / bytes changed", ratios,
                                   "x", "<= 2", digits=2))
            rows.append(median_row(f"checkpoint upload, 5 % changed ({kind}): time", times, "s", digits=2))
    finally:
        provider.release(lease)
    return rows


def main() -> int:
    parser = bench_parser(__doc__.split("\n")[0])
    args = parser.parse_args()
    check_samples(parser, args)
    samples = 1 if args.quick else args.samples
    size = (20 if args.quick else 200) << 20
    if args.quick:
        QUICK["after"] = " 5"
    with json_stdout(args.json) as out:
        rows = [load_row()]
        with tempfile.TemporaryDirectory(prefix="fleet-bench-recovery-") as tmp:
            root = Path(tmp)
            home = root / "home"
            exp = root / "exp"
            exp.mkdir()
            (exp / "train.py").write_text(TRAIN)
            env = clean_env(FLEET_HOME=str(home), FLEET_GRACE="10")
            fresh, resumed = [], []
            try:
                if not args.quick:
                    fresh_up(exp, env)   # warming: venv cache, helper caches
                for i in range(samples):
                    say(f"sample {i + 1}/{samples}")
                    pair = [lambda: fresh.append(fresh_up(exp, env)),
                            lambda: resumed.append(resume_after_loss(exp, env, home))]
                    for step in (pair if i % 2 == 0 else pair[::-1]):
                        step()
                rows.append(median_row("fresh fleet up --gpus 2: start to first rank line", fresh, "s", digits=2))
                rows.append(median_row("machine lost to first rank line of attempt 2", resumed, "s", digits=2))
                rows.append(ratio_row("resume after a loss vs a fresh up (2 machines)", resumed, fresh, "<= 2"))
            except Exception as exc:  # noqa: BLE001 — a figure that could not be measured is reported, never met
                rows.append(failed_row("resume after a loss vs a fresh up (2 machines)", "x", str(exc), "<= 2"))
            try:
                returns = [detach_return(exp, env) for _ in range(samples)]
                rows.append(median_row("fleet up -d: staging done to the launcher's exit", returns, "s", "<= 3",
                                       digits=2))
            except Exception as exc:  # noqa: BLE001
                rows.append(failed_row("fleet up -d: staging done to the launcher's exit", "s", str(exc), "<= 3"))
            try:
                rows += aws_rows(samples, root, quick=args.quick)
            except Exception as exc:  # noqa: BLE001
                rows.append(failed_row("AWS sandbox: spot notice to resumed vs a fresh up (2 machines)", "x",
                                       str(exc), "<= 2"))
            try:
                rows += upload_ratios(size, samples, root / "upload-home")
            except Exception as exc:  # noqa: BLE001
                rows.append(failed_row("checkpoint upload, 5 % changed: bytes sent / bytes changed", "x", str(exc),
                                       "<= 2"))
        rows.append(load_row("at end"))
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
