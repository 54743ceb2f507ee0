#!/usr/bin/env python3
"""The Slurm sandbox: a real Slurm cluster on this computer, to try fleet's Slurm path without one.

    python scripts/slurm_sandbox.py start > slurm.env   # munged, MariaDB + slurmdbd, slurmctld, 2 slurmd
    . ./slurm.env                                       # export SLURM_CONF=…
    sinfo; sbatch --gres=gpu:1 --wrap 'echo $CUDA_VISIBLE_DEVICES'; sacct
    python scripts/slurm_sandbox.py status
    python scripts/slurm_sandbox.py stop                # cancels jobs, stops every daemon, removes it all

The cluster is the one the test suite starts (tests/fixtures/slurm.py; how it is built: docs/slurm.md):
partition `gpu`, nodes n1..nN on 127.0.0.1 with placeholder GPUs as GRES, account `fleet`, and a QoS
`onegpu` that refuses jobs asking for more than one GPU. Its daemons outlive this script; its
description is kept in $FLEET_HOME/slurm-sandbox/cluster.json for `status` and `stop`. Needs root
and Debian's slurmctld, slurmd, slurm-client, munge (+ slurmdbd, mariadb-server for sacct).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _state_file() -> Path:
    from fleet.paths import subdir
    return subdir("slurm-sandbox") / "cluster.json"


def _load():
    from tests.fixtures.slurm import SlurmCluster, cluster_processes
    path = _state_file()
    if not path.exists():
        return None, path
    cluster = SlurmCluster.from_json(path.read_text())
    alive = cluster.pids.get("slurmctld") in cluster_processes(cluster) if cluster.root.exists() else False
    return (cluster if alive or cluster.root.exists() else None), path


def start(args) -> int:
    from tests.fixtures.slurm import ClusterUnavailable, start_cluster
    cluster, path = _load()
    if cluster is not None:
        print(f"slurm_sandbox: error: already running ({cluster.root}); `stop` it first", file=sys.stderr)
        return 2
    try:
        cluster = start_cluster(nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                cpus_per_node=args.cpus_per_node, accounting=False if args.no_accounting else None)
    except ClusterUnavailable as exc:
        print(f"slurm_sandbox: error: {exc}", file=sys.stderr)
        return 3
    path.write_text(cluster.to_json())
    print(f"export SLURM_CONF={shlex.quote(str(cluster.conf))}")
    accounting = "sacct via slurmdbd" if cluster.accounting else "no accounting (jobcomp file only)"
    print(f"# sandbox ready: nodes {','.join(cluster.nodes)} × {cluster.gpus_per_node} GPUs, partition "
          f"{cluster.partition}, {accounting}. Stop: python scripts/slurm_sandbox.py stop", flush=True)
    return 0


def stop(args) -> int:
    from tests.fixtures.slurm import stop_cluster
    cluster, path = _load()
    if cluster is None:
        print("slurm_sandbox: not running")
        path.unlink(missing_ok=True)
        return 0
    stop_cluster(cluster)
    path.unlink(missing_ok=True)
    print(f"slurm_sandbox: stopped and removed {cluster.root}")
    return 0


def status(args) -> int:
    cluster, _ = _load()
    if cluster is None:
        print("slurm_sandbox: not running")
        return 1
    print(f"export SLURM_CONF={shlex.quote(str(cluster.conf))}")
    for argv in (["sinfo", "-N", "-o", "%N %t %G"], ["squeue"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                                                     **cluster.env})
        print(done.stdout.rstrip() or done.stderr.rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start the cluster, print `export SLURM_CONF=…`")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--gpus-per-node", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=2)
    p.add_argument("--no-accounting", action="store_true", help="no MariaDB/slurmdbd (no sacct)")
    sub.add_parser("stop", help="cancel every job, stop every daemon, remove the cluster directory")
    sub.add_parser("status", help="nodes and queue")
    args = parser.parse_args(argv)
    return {"start": start, "stop": stop, "status": status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
