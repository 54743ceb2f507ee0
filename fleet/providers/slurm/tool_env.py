"""The environment Slurm's tools run in (sbatch, salloc, srun, squeue, …, and the node steps).

Slurm exports the submitting environment into the job by default: into its steps, fleet's node
agents on the compute nodes (readable there by anything of the user's, the experiment included),
and the job's records. A supervisor on the login node holds the state's URL (its password) and the
store's keys in its own environment (fleet/run/login_launch.py hands them over on stdin): those
stay out of what it runs, as they did when Slurm's tools ran over ssh from the laptop."""
from __future__ import annotations

import os
from typing import Mapping

# FLEET_LAUNCH_SEAL_KEY: what proves to `fleet reap` that a run is this user's (fleet/run/launch_seal.py);
# a job's environment lands in Slurm's records, where a cluster's admins and tools read it.
# FLEET_RECORDS_KEY: what seals the run records, kept from the experiment (SECURITY.md).
SECRETS = frozenset({"FLEET_STATE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "FLEET_LAUNCH_SEAL_KEY", "FLEET_RECORDS_KEY"})
# Slurm's own credential, which its tools authenticate to slurmctld with where the cluster uses
# auth/jwt (no munge on this computer): a JWT by its format, yet without it no tool runs at all.
SLURM_AUTH = frozenset({"SLURM_JWT"})
# squeue's and sinfo's filters from the environment (`man squeue`, `man sinfo`), a user's own defaults
# for reading the queue, apply on top of fleet's `--jobs=ID`, `--me` and `--nodes=`, even set empty:
# SQUEUE_PARTITION=debug hid a lease's job in partition gpu, which then read as gone, and
# SINFO_PARTITION its nodes' addresses. Never set for Slurm's tools (over ssh: `env -u`).
LISTING_FILTERS = ("SQUEUE_ACCOUNT", "SQUEUE_LICENSES", "SQUEUE_NAMES", "SQUEUE_PARTITION", "SQUEUE_QOS",
                   "SQUEUE_STATES", "SQUEUE_USERS", "SINFO_PARTITION")


def tool_env(*extra: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment less SECRETS, the run's named secrets (FLEET_SECRET_NAMES) and
    whatever is named like a secret (a token, a password, a key), is a credential by its format
    (`GH_PAT=ghp_…`) or holds a URL's password: the experiment gets its secrets
    from the run's spec, not from Slurm's copy of this environment; nor LISTING_FILTERS. `extra` (e.g.
    SLURM_CONF) is added."""
    from ...masking import holds_url_password, looks_credential, looks_secret, secret_names
    named = set(secret_names())
    # A URL with a password in it is a secret whatever its variable is called (PIP_INDEX_URL,
    # DATABASE_URL in a CI job's environment), as the masker takes it.
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and k not in named and not looks_secret(k)
           and not holds_url_password(v) and (k in SLURM_AUTH or not looks_credential(v)) and k not in LISTING_FILTERS}
    for more in extra:
        env.update(more or {})
    return env
