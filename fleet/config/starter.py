"""The starter fleet.toml `fleet init` writes: every key with a comment, optional ones commented out so
the file runs as is (tests/unit/test_config_schema_init.py checks it against the key table).

The general keys are written here; each registered provider adds its own section (its settings'
`starter_block`) and its line in the list of providers, so a new provider appears without an edit
here. The `#:schema` line names fleet's JSON Schema by its stable `$id` (json_schema.SCHEMA_ID), the
same on every machine, so the file can be committed and shared; `fleet config schema` writes a local copy.
"""
from __future__ import annotations

from pathlib import Path

from .json_schema import SCHEMA_ID
from .loader import _default_project as default_project   # the package's own rule, shared

CORE = '''\
#:schema {schema_uri}
# fleet.toml: one experiment for `fleet up`. Every key is optional except `command`.
# Editors: the line above names fleet's JSON Schema for TOML editors (Taplo / Even Better TOML) by its
# stable URL; `fleet config schema -o FILE` writes the copy your installed fleet knows (README, "Editors").
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
# Where machines come from (`--provider`):
{providers}
provider = "local"
# true: one process per GPU slot (FLEET_RANK / FLEET_WORLD_SIZE); false: one process per machine.
per_gpu = false
# Directory (relative to this one) that comes home into runs/<run-id>/ when the run ends.
outputs = "outputs"
# The most that comes home from one machine (sparse files count their full size), or "none": past
# it the rest is not fetched and the run ends with its outputs incomplete.
# outputs_max = "100G"
# Hard limit (`--max-duration`): machines destroy themselves at this deadline, whatever happens.
max_duration = "4h"
# Python on the machines. Local default: the Python running fleet.
# python = "python3"
# Managed runs (docs/managed-runs.md): upload $FLEET_CHECKPOINT_DIR this often while the command
# runs (only changed chunks; it is always uploaded when the command ends or is stopped) …
# checkpoint_interval = "10m"
# … and after lost machines resume on new ones from the last checkpoint: spot (only after losing
# spot machines), always, or never; at most max_restarts times, within the one budget.
# recovery = "spot"
# max_restarts = 3
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

# Environment variables for setup and command (strings, numbers or true/false).
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

# `fleet sweep`: trials of the experiment on machines leased once (flags override each key).
# [sweep]
# command = "python train.py --lr {{lr}} --hidden {{hidden}}"   # default: `command`
# params = {{ lr = [0.01, 0.1], hidden = [32, 64] }}          # each trial gets {{name}} and FLEET_PARAM_<NAME>
# samples = 4                # random search: this many trials (default: every combination)
# seed = 1                   # the same seed draws the same trials
# parallel = 2               # trials at once
# gpus_per_trial = 1
# trial_timeout = "10m"      # a trial still running then is stopped (default: max_duration)
# budget = 20                # US dollars for the whole sweep
# stop_if = "val_loss > 2.0 after 3 epochs"   # early stopping, read from the trial's metrics.json
# idle_release = "2m"        # a pool machine waiting this long on the budget is released (default: at once)

# Waiting for GPU slots on team hosts (`fleet up --wait 10m`): first come, first served.
# [queue]
# max_gpus_per_user = 8      # GPUs one user may hold at once; more waits without holding up others

# Data directories pinned as snapshots and placed on the machines: name = "path".
# [data]
# digits = "data/digits"          # or "s3://bucket/prefix", or "snapshot:train-v3" (fleet snapshot create --name)

# Price overrides in US dollars per hour (template or instance type = price).
# [prices]
# "local-4gpu" = 0
'''


def provider_lines() -> str:
    """`#   "local": sshd sandboxes on this computer (simulated GPUs)`, one per offered provider."""
    from ..providers import registry
    lines = []
    for name in registry.names(listed_only=True):
        description = registry.provider_class(name).description
        lines.append(f'#   "{name}"' + (f": {description}" if description else ""))
    return "\n".join(lines)


def provider_blocks() -> str:
    from .schema import provider_sections
    return "\n".join(settings.starter_block() for settings in provider_sections(listed_only=True).values())


def starter_text(directory: Path) -> str:
    return CORE.format(schema_uri=SCHEMA_ID, project=default_project(directory.resolve()),
                       providers=provider_lines()) + "\n" + provider_blocks()
