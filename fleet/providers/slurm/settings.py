"""`[slurm]` in fleet.toml: the Slurm provider's own section (stdlib-only)."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from ...config.schema import DURATION, PORT, POSITIVE_NUMBER, PRICE, STRING, Invalid, Key, Kind, choice
from ..base import ProviderSettings

GPU_FLAG = Kind(choice(("gres", "gpus-per-node")), {"type": "string", "enum": ["gres", "gpus-per-node"]})


def reads_as_ssh_option(text: str) -> bool:
    """ssh would read it as an option, or as more than one word, where a destination belongs."""
    return text.startswith("-") or any(c.isspace() for c in text)


def _ssh_destination(value) -> str:
    """user@host[:port] as ssh gets it on its command line: one that starts with '-' would be read
    as an option (login = "-oProxyCommand=…" ran that command on this computer at `fleet up`)."""
    text = STRING.convert(value)
    if reads_as_ssh_option(text):
        raise Invalid(f"must be user@host (no leading '-', no spaces), got {text!r}")
    return text


SSH_DESTINATION = Kind(_ssh_destination, STRING.schema)


def _node_path(value) -> str:
    """A directory on the nodes: it lands quoted in each node's sshd_config, where no quoting carries a
    double quote, a backslash or a control character (sshd then refused to start on every node)."""
    text = STRING.convert(value)
    if not text.startswith("/") or any(c in '"\\' or ord(c) < 32 or ord(c) == 127 for c in text):
        raise Invalid(f"must be an absolute path without quotes, backslashes or control characters, got {text!r}")
    return text


NODE_PATH = Kind(_node_path, STRING.schema)
DEFAULT_WAIT_S = 300


@dataclass
class SlurmSettings(ProviderSettings):
    login: str | None = None                 # "user@host": run Slurm's tools there over SSH; None: here
    login_port: int | None = None
    identity: str | None = None              # private key for the login node (default: ssh's own)
    jump: str | None = None                  # "user@host[:port]": reach the login node through it
    known_hosts: str | None = None           # known_hosts file for login node and jump (default: ssh's own)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpu_flag: str = "gres"                   # --gres=gpu:G or --gpus-per-node=G
    price_per_gpu_hour: Decimal = Decimal("0")
    wait_s: int = DEFAULT_WAIT_S             # how long a lease may wait in the queue
    python: str = "python3"                  # on the compute nodes
    workdir: str = "/tmp"                    # on the compute nodes: machine directories go under it
    shared_dir: str | None = None            # on a filesystem login and compute nodes share: inputs staged once
    poll_s: float = 2.0                      # squeue while waiting for, and watching, the allocation
    supervisor_python: str = "python3"       # on the login node: runs a detached run's supervisor (handoff.py)

    section: ClassVar[str] = "slurm"
    help: ClassVar[str] = "A Slurm cluster (provider = \"slurm\"): where its tools run and what to ask it for."
    starter: ClassVar[str] = """\
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
# shared_dir = "/shared/scratch" # staged once per job when nodes share it; default detected
# poll = 2                       # seconds between squeue calls
# supervisor_python = "python3"  # Python >= 3.11 with fleet's deps on the login node (fleet up -d)
"""
    keys: ClassVar[dict[str, Key]] = {
        "login": Key(SSH_DESTINATION, "Login node as user@host: fleet runs sbatch/squeue/srun there over SSH "
                             "(key authentication, host key already known). Default: on this computer."),
        "login_port": Key(PORT, "SSH port of the login node.", default=22),
        "identity": Key(STRING, "Private key for the login node (and the jump host). Default: your ssh config "
                                "and agent."),
        "jump": Key(SSH_DESTINATION, "Jump host as user@host[:port]: the SSH connection to the login node goes through "
                            "it (same key, host key already known). Default: straight to the login node."),
        "known_hosts": Key(STRING, "known_hosts file holding the login node's (and jump host's) host key. "
                                   "Default: ssh's own (~/.ssh/known_hosts)."),
        "partition": Key(STRING, "Partition to submit to. Default: the cluster's default partition."),
        "account": Key(STRING, "Account to charge. Default: your default account."),
        "qos": Key(STRING, "Quality of service. Default: your default QoS."),
        "constraint": Key(STRING, "Node features required (sbatch --constraint)."),
        "gpu_flag": Key(GPU_FLAG, "How GPUs are asked for: gres (--gres=gpu:G) or gpus-per-node.",
                        default="gres"),
        "price_per_gpu_hour": Key(PRICE, "Internal or shadow price of one GPU-hour, in US dollars "
                                         "(what budgets and reports count).", default=0),
        "wait": Key(DURATION, "How long a lease may wait in the queue before fleet cancels it "
                              "(fleet up --wait overrides).", default=DEFAULT_WAIT_S, target="wait_s"),
        "python": Key(STRING, "Python 3 on the compute nodes (runs fleet's agent).", default="python3"),
        "workdir": Key(NODE_PATH, "Directory on the compute nodes under which each machine gets its own "
                               "(node-local, removed at release).", default="/tmp"),
        "shared_dir": Key(NODE_PATH, "Directory on a filesystem the login node and the compute nodes share: "
                                  "code and data are staged there once per job, not once per node (refused if a "
                                  "node does not see it). Default: detected (workdir, when the nodes share it)."),
        "poll": Key(POSITIVE_NUMBER, "Seconds between squeue calls while waiting and while the lease runs.",
                    default=2, target="poll_s"),
        "supervisor_python": Key(STRING, "Python 3.11 or later on the login node, with fleet's dependencies "
                                         "(psycopg, boto3, paramiko, pyfastcdc): with `login`, a PostgreSQL state "
                                         "and an S3 store, `fleet up -d` runs the run's supervisor there with it "
                                         "(docs/slurm.md, Detached runs).", default="python3"),
    }
