"""Staging once per job on a filesystem the login node and the compute nodes share: the probe the
login node writes (each node step reads it back: fleet/providers/slurm/node.py) and the cleanup."""
from __future__ import annotations

import secrets

from ...errors import InfrastructureError
from .commands import SlurmCommands
from .settings import SlurmSettings


# "$3" and each directory above it: owned by root or this user, and writable by every user only with
# the sticky bit (a group's write is allowed, as for FLEET_HOME: a team may share a group on purpose).
_OURS = ('p=$(cd -- "$3" && pwd -P) && while :; do '
         'if [ -n "$(find "$p" -maxdepth 0 \\( -perm -0002 ! -perm -1000 \\) -o '
         '\\( ! -user 0 ! -user "$(id -u)" \\))" ]; then '
         'echo "$p is another user\'s, or writable by every user without the sticky bit: anyone could swap '
         'the staged code there" >&2; exit 3; fi; '
         '[ "$p" = / ] && break; p=$(dirname -- "$p"); done')


def staging_probe(slurm: SlurmCommands, cfg: SlurmSettings, lease_id: str) -> dict[str, str] | None:
    """A directory for the lease's inputs where the login node writes (`[slurm] shared_dir`, else
    the nodes' `workdir`), with a probe file only this lease knows: each node that reads it back
    shares that filesystem, and its machine is staged there, once for all of them. One command
    on the login node. None where the login node cannot write there (and none was configured)."""
    base = (cfg.shared_dir or cfg.workdir).rstrip("/") or "/"
    spec = {"dir": f"{base}/fleet-{lease_id}-inputs", "probe": ".fleet-shared-probe",
            "token": secrets.token_hex(16)}
    # The lease's own directory, never one that is already there: the job's name shows the lease id
    # to every user in squeue while it pends, and a directory (or link) someone made first in a
    # world-writable scratch would receive the token, then the lease's code and data.
    # And only where no other user can rename it away later and put theirs in its place (after the
    # nodes read the probe): every directory above it root's or this user's, writable by every user
    # only with the sticky bit (as /tmp).
    # chmod after mkdir: a default ACL on the parent (a group project space) overrides the umask, and
    # the nodes trust only a directory no one else can write (node.py _shared_staging).
    # The token goes on stdin: any user of the login node (and of this computer, for the ssh to it)
    # reads every process's arguments, and with the token and the lease id (squeue shows it) could
    # plant a "shared" directory on a node whose workdir is node-local (node.py _shared_staging).
    result = slurm._run(["sh", "-c", 'umask 077 && mkdir -p -- "$3" && ' + _OURS + ' && mkdir -- "$1" && '
                         'chmod 700 -- "$1" && cat > "$1/$2"', "sh", spec["dir"], spec["probe"], base], stdin=spec["token"], check=False)
    if result.returncode == 0:
        return spec
    if cfg.shared_dir:
        why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise InfrastructureError(f"[slurm] shared_dir {cfg.shared_dir}: " + (
            f"not safe to stage in: {why}" if result.returncode == 3 else f"the login node cannot write there ({why})"))
    return None


def staging_dir_of(lease_id: str, recorded: object) -> str | None:
    """The staging directory recorded on a lease, when it is one `staging_probe` makes for that lease
    (a path ending in fleet-<lease id>-inputs, no `..`, under whatever `shared_dir` or `workdir` was
    set: `~/scratch` too); None otherwise. The lease row is in a state teammates can write: a path
    planted there must never reach `rm -rf`."""
    import posixpath
    if not isinstance(recorded, str) or "\0" in recorded or ".." in recorded.split("/"):
        return None
    return recorded if posixpath.basename(recorded.rstrip("/")) == f"fleet-{lease_id}-inputs" else None


def remove_staging(slurm: SlurmCommands, directory: str) -> None:
    """Remove a lease's staging directory from the login node (idempotent, best effort). Only a
    directory of this user's: a link there is not the lease's (chmod -R follows a link it is given),
    and neither is another user's directory of that name."""
    try:        # staged data is read-only: make it writable to remove it
        slurm._run(["sh", "-c", '[ ! -L "$1" ] && [ -d "$1" ] && [ -O "$1" ] && '
                    '{ chmod -R u+w -- "$1" 2>/dev/null; rm -rf -- "$1"; }',
                    "sh", directory], check=False)
    except Exception:  # noqa: BLE001 — the node steps remove it too when the job ends
        pass
