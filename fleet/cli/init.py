"""`fleet init [DIR] [--force]`: write a commented starter fleet.toml."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

# Every key fleet.toml accepts is shown here with a comment (a unit test checks this against the
# key table in fleet/config/schema.py). Optional keys are commented out so the file runs as is.
STARTER = '''\
#:schema {schema_uri}
# fleet.toml: one experiment for `fleet up`. Every key is optional except `command`.
# Editors: the line above points TOML editors (Taplo / Even Better TOML) at fleet's JSON Schema,
# shipped as {schema_path}
# Durations: "90s", "30m", "2h", "1h30m", "1d" or a number of seconds. Money: US dollars.

# Project name: groups runs, costs and budgets (letters, digits, . _ -). Default: the directory name.
project = "{project}"
# Experiment name. Default: the project name.
# name = "baseline"

# The command run on every machine (or every GPU slot with per_gpu = true), from this directory.
# `fleet up -- CMD ...` overrides it. It sees FLEET_NODE_RANK, FLEET_NUM_NODES, FLEET_OUTPUT_DIR, ...
command = "python train.py"
# Run once per machine before `command`, e.g. install requirements.
# setup = "python -c 'import numpy' || pip install -r requirements.txt"

# Total GPUs to lease (`--gpus`), optionally of one type: 8, "A100:8", "A100-80GB:8", "L4:4";
# machines are added from the template until they add up. Default: one machine of the template.
gpus = 4
# Machine template (`--template`): local-1gpu, local-4gpu, local-8gpu (simulated A10G GPUs on this
# computer), an AWS template, or your hosts with provider = "ssh". Default: the provider's own
# (local-4gpu; aws: the stack's largest; ssh: hosts; slurm: slurm-1gpu), or with a GPU type the
# cheapest template that has it.
# template = "local-4gpu"
# Where machines come from (`--provider`): "local" (sshd sandboxes here), "ssh" ([[hosts]]), "aws".
provider = "local"
# true: one process per GPU slot (FLEET_RANK / FLEET_WORLD_SIZE); false: one process per machine.
per_gpu = false
# Directory (relative to this one) that comes home into runs/<run-id>/ when the run ends.
outputs = "outputs"
# Hard limit (`--max-duration`): machines destroy themselves at this deadline, whatever happens.
max_duration = "4h"
# Python on the machines. Local default: the Python running fleet.
# python = "python3"
# Who is running, for budgets and records. Default: your login name.
# user = "alice"
# Per-run budget in US dollars (`--budget`): refused before leasing, stopped when spent.
# budget = 25
# Snapshot store (a path or s3://bucket/prefix). Default: $FLEET_HOME/store.
# store = "s3://my-bucket/fleet"
# Size cap of each machine host's chunk cache, kept between leases so unchanged data is not sent again.
# cache_max = "50G"
# Where cloud machines keep that cache (an instance store or cache volume). Default: ~/.cache/fleet/chunks.
# cache_dir = "/mnt/fleet-cache"
# Shared state for a team (PostgreSQL). Default: SQLite in $FLEET_HOME.
# state_url = "postgresql://fleet@db.example/fleet"
# Environment variables copied from your shell into the run, always redacted in logs and records.
# secrets = ["HF_TOKEN"]

[lease]
# While fleet runs it extends each machine's deadline this much at a time; if fleet itself dies,
# the machines are gone within this long. The environment variable FLEET_HEARTBEAT_TTL overrides it.
heartbeat_ttl = "5m"

# Environment variables for setup and command (string values).
[env]
# OMP_NUM_THREADS = "1"

# Spending limits beyond `budget`, in US dollars.
# [budgets]
# project_monthly = 500      # per project per month
# user_monthly = 200         # per user per month
# warn_at = 0.8              # warn when this fraction of a budget is spent
# grace = "30s"              # time a run gets to stop cleanly once its budget is gone
# idle_gpu_percent = 5       # idle policy: GPU utilisation below this percentage is idle...
# idle_minutes = 20          # ...and a run idle this many minutes is stopped

# Data directories pinned as snapshots and placed on the machines: name = "path".
# [data]
# digits = "data/digits"          # or "s3://bucket/prefix", or "snapshot:train-v3" (fleet snapshot create --name)

# Price overrides in US dollars per hour (template or instance type = price).
# [prices]
# "local-4gpu" = 0

# AWS provider settings (the region and account come from the stack outputs).
# [aws]
# outputs = "stack-outputs.json"  # written by `fleet stack up`; $FLEET_AWS_OUTPUTS overrides
# stack = "dev"                   # or read a Pulumi stack's outputs live (needs the pulumi CLI)
# stack_dir = "."                 # the Pulumi project directory for `stack`
# connect = "public"              # "private": reach machines on private IPs (controller inside the VPC)
# allow_custom_endpoint = false   # true: AWS_ENDPOINT_URL is a real private endpoint, not moto

# Your own SSH GPU hosts for provider = "ssh"; one block per host.
# [[hosts]]
# address = "gpu1.example.org"   # host name or IP (required)
# user = "ubuntu"                # SSH user; default your login name
# port = 22                      # SSH port
# key = "~/.ssh/id_ed25519"      # private key; default your agent / ~/.ssh keys
# gpus = 8                       # GPUs on the host; default discovered over SSH
# gpu_model = "A100-80GB"        # matched by --gpus A100:8; default discovered over SSH (nvidia-smi)
# name = "gpu1"                  # short name shown in status
# workdir = "/scratch/fleet"     # each lease's working directory goes under it; default ~/.fleet-leases

# A Slurm cluster for provider = "slurm" (template = "slurm-1gpu" … "slurm-8gpu": GPUs per node).
# [slurm]
# login = "me@login.cluster.org" # run sbatch/squeue/srun there over SSH; default on this computer
# login_port = 22                # SSH port of the login node
# identity = "~/.ssh/id_ed25519" # key for the login node; default your ssh config and agent
# jump = "me@gateway.org:22"     # reach the login node through this host; default straight there
# known_hosts = "~/.ssh/known_hosts"  # where the login node's host key is; default ssh's own
# partition = "gpu"              # default the cluster's default partition
# account = "mylab"              # default your default account
# qos = "normal"                 # default your default QoS
# constraint = "a100"            # node features (sbatch --constraint)
# gpu_flag = "gres"              # "gres" (--gres=gpu:G) or "gpus-per-node"
# price_per_gpu_hour = 2.5       # internal price per GPU-hour for budgets and reports
# wait = "5m"                    # how long a lease may wait in the queue (fleet up --wait)
# python = "python3"             # Python 3 on the compute nodes
# workdir = "/tmp"               # node-local directory for fleet's machine directories
# poll = 2                       # seconds between squeue calls
'''


def starter_text(directory: Path) -> str:
    from ..config.loader import SCHEMA_FILE, _default_project
    return STARTER.format(schema_uri=SCHEMA_FILE.resolve().as_uri(), schema_path=SCHEMA_FILE.resolve(),
                          project=_default_project(directory.resolve()))


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        directory: Optional[Path] = typer.Argument(None, help="Experiment directory (default: here)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing fleet.toml."),
    ) -> None:
        """Write a commented starter fleet.toml (every key explained)."""
        import os
        import tempfile

        from ..errors import EnvironmentProblem, UsageError
        target_dir = (directory or Path.cwd()).expanduser()
        target = target_dir / "fleet.toml"
        try:   # exists() too can fail (a name too long for the filesystem: found by fuzzing the CLI)
            if target.exists() and not force:
                raise UsageError(f"{target} already exists; not overwriting it", hint="use --force to replace it")
            target_dir.mkdir(parents=True, exist_ok=True)
            # Write next to the target and rename, so --force never leaves a half-written file.
            fd, tmp = tempfile.mkstemp(prefix=".fleet.toml.", dir=target_dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(starter_text(target_dir))
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write {target}: {exc.strerror or exc}") from None
        typer.echo(f"wrote {target}: set `command`, then run `fleet up`")
