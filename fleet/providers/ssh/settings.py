"""`[[hosts]]` in fleet.toml: the ssh provider's own section, one block per team GPU host."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...config.schema import HOST_GPUS, PORT, STRING, Invalid, Key, Kind, _fmt, _string
from ..base import ProviderSettings


def host_workdir(value: Any) -> str:
    """A team host's workdir: absolute or under ~/, no '..' (each lease's directory is made, and
    later removed, under it), one line of printable text."""
    text = _string(value)
    parts = text.split("/")
    if not text.startswith(("/", "~/")) or ".." in parts or any(not c.isprintable() for c in text):
        raise Invalid(f"must be an absolute path or one under ~/, without '..', got {_fmt(value)}")
    return text


HOST_WORKDIR = Kind(host_workdir, {"type": "string", "pattern": "^(/|~/)"})


def host_word(value: Any) -> str:
    """An address, name or login: one word, as `fleet hosts add` requires (enrol.check_words): a
    leading '-' is an option to ssh (`-oProxyCommand=…`), ESC sequences would reach `fleet status`."""
    text = _string(value)
    if text.startswith("-") or any(c.isspace() or not c.isprintable() for c in text):
        raise Invalid("must be one word without spaces or control characters, not starting with '-', "
                      f"got {_fmt(value)}")
    return text


HOST_WORD = Kind(host_word, {"type": "string", "pattern": "^[^-\\s][^\\s]*$"})


@dataclass
class HostConfig:
    """A team's own SSH GPU host (one `[[hosts]]` block)."""

    address: str
    user: str | None = None
    port: int = 22
    key: str | None = None
    gpus: int | None = None          # discovered over SSH when not declared
    gpu_model: str | None = None     # e.g. "A100-80GB"; discovered with nvidia-smi when not declared
    name: str | None = None
    workdir: str | None = None       # lease workdirs go under it; default ~/.fleet-leases on the host
    supervisor_login: str | None = None   # runs a detached run's supervisor when this host is node 0
    supervisor_python: str | None = None  # that login's python (paramiko, boto3, psycopg, pyfastcdc)


@dataclass
class SSHSettings(ProviderSettings):
    hosts: list[HostConfig] = field(default_factory=list)

    section: ClassVar[str] = "hosts"
    array: ClassVar[bool] = True
    required: ClassVar[tuple[str, ...]] = ("address",)
    help: ClassVar[str] = "Your own SSH GPU hosts (provider = \"ssh\"), one [[hosts]] block each."
    starter: ClassVar[str] = """\
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
# supervisor_login = "fleet-sup" # `fleet up -d`: the run's supervisor runs here as this login (not `user`)
# supervisor_python = "/opt/fleet/bin/python"   # that login's python; default the experiment's
"""
    keys: ClassVar[dict[str, Key]] = {
        "address": Key(HOST_WORD, "Host name or IP address."),
        "user": Key(HOST_WORD, "SSH user. Default: your login name."),
        "port": Key(PORT, "SSH port.", default=22),
        "key": Key(STRING, "Private key file. Default: your SSH agent / ~/.ssh keys."),
        "gpus": Key(HOST_GPUS, "GPUs on the host. Default: discovered over SSH."),
        "gpu_model": Key(STRING, "GPU model on the host, e.g. A100-80GB (matched by `--gpus A100:8`). "
                                 "Default: discovered over SSH (nvidia-smi)."),
        "name": Key(HOST_WORD, "Short name shown in status. Default: the address."),
        "workdir": Key(HOST_WORKDIR, "Directory on the host under which each leased machine gets its own working "
                               "directory. Default: ~/.fleet-leases."),
        "supervisor_login": Key(HOST_WORD, "SSH login (same key as `user`) that runs a detached run's supervisor "
                                        "when this host is node 0 (`fleet up -d` with a PostgreSQL state and an "
                                        "S3 store): another user than `user`, so the experiment cannot read its "
                                        "credentials. Default: none (the supervisor runs as `user`, with a warning)."),
        "supervisor_python": Key(STRING, "Python of `supervisor_login` on the host, with paramiko, boto3, psycopg "
                                         "and pyfastcdc. Default: the experiment's python."),
    }

    @classmethod
    def from_fields(cls, fields: Any) -> "SSHSettings":
        return cls(hosts=[HostConfig(**item) for item in fields])
