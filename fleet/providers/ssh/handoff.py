"""A detached run on team hosts, supervised from node 0's host (fleet/run/node_launch.py,
fleet/providers/node0.py).

The supervisor runs there as the host entry's `supervisor_login` (a login other than the
experiment's, `[[hosts]] supervisor_login`), in that login's ~/.fleet-supervisor/<lease>. It reaches
the lease's machines as the experiment's login, as the laptop does, but never with the laptop's own
key: the launcher makes a key for the lease alone, authorizes it in each of the lease's host logins
(`~/.ssh/authorized_keys`, with `expiry-time` at the lease's longest life and the comment
`fleet-lease-<lease>`), hands the private half to node 0's supervisor and keeps no copy. Releasing
the lease (by the supervisor at the run's end, or `fleet down`/`fleet reap` from any computer)
removes that line on every host login once its machines are stopped (REVOKE); the supervisor then
deletes its copy. If nothing releases it, sshd refuses the key after its expiry anyway.

Team hosts stay up after the run, so the supervisor ends itself after the release (nothing
terminates it as a cloud instance's end does). It cannot lease machines for a later attempt: the
lease key is authorized on this lease's hosts only, and the laptop's keys to the others are not
handed over. A lost machine therefore ends the run with its checkpoints (`fleet up --resume`).
"""
from __future__ import annotations

import shlex
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..capabilities import ReleasedFromAnywhere
from ..node0 import Node0Handoff

SUPERVISOR_DIR = ".fleet-supervisor"     # under the supervisor login's home: <this>/<lease id>
KEY_EXPIRY_MARGIN = timedelta(minutes=30)   # past the lease's max_deadline: collecting, recording, releasing


def key_tag(lease_id: str) -> str:
    return f"fleet-lease-{lease_id}"


# Appends the lease key's line under the login's authorized_keys, serialized with other leases'
# (flock where the host has it): a line is never lost to another lease's removal. A file whose last
# line has no newline gets one first: else the lease's line would become that key's tail, and the
# revoke would then take the user's own key out with it.
_INSTALL = ('umask 077; A="$HOME/.ssh/authorized_keys"; mkdir -p "$HOME/.ssh" && exec 9>>"$A.fleet-lock" && '
            '{{ command -v flock >/dev/null 2>&1 && flock 9; '
            'if [ -s "$A" ] && [ -n "$(tail -c 1 "$A")" ]; then printf "\\n" >> "$A"; fi; '
            'printf "%s\\n" {line} >> "$A"; }}')

# fleet's own line for lease $K, as _INSTALL wrote it: `expiry-time="…" <type> <key> fleet-lease-<id>`,
# compared as text (the lease id is no pattern), a CR at its end ignored (a file an editor made CRLF).
_OURS = ('function ours(  l, n, w) {{ l = $0; sub(/\\r$/, "", l); n = split(l, w, /[ \\t]+/); '
         'return index(l, "expiry-time=\\"") == 1 && n == 4 && w[4] == ENVIRON["K"] }}')

# Removes the lease key's line (a whole-lease release: provider.py revokes on each host login once
# every machine there is stopped). The copy without it must be whole before it replaces the file
# (a full disk cuts it short); `cat >` keeps the file's owner, mode and link, and where even that
# fails the whole copy is renamed over it. Nothing is done where the line is absent. The file is read
# only under the lock (read during another lease's rewrite, it may look empty); where fleet never
# installed a key (no lock file) nothing is read or made. No `!` in
# it: a csh login shell (HPC hosts) expands history there, even inside single quotes.
REVOKE = ('K={tag}; export K; A="$HOME/.ssh/authorized_keys"; T="$A.fleet-$$"; '
          'if [ -f "$A" ] && [ -e "$A.fleet-lock" ]; then umask 077; exec 9>>"$A.fleet-lock"; '
          '{{ command -v flock >/dev/null 2>&1 && flock 9; '
          'if awk \'' + _OURS + ' ours() {{ f = 1 }} END {{ exit 1 - f }}\' "$A"; then '
          'if awk \'' + _OURS + ' ours() == 0\' "$A" > "$T"; then cat "$T" > "$A" || mv -f "$T" "$A"; '
          'else echo "fleet: could not rewrite $A without lease key $K" >&2; fi; rm -f "$T"; fi; }}; fi')


class SSHHandoff(Node0Handoff):
    release_ends_supervisor = False
    leases_from_node0 = False
    why_no_lease_from_node0 = ("node 0's supervisor on a team host holds a key for this lease's hosts only, "
                               "so it cannot lease machines for another attempt")

    def lease_key(self, lease: Any, node0: Any, events: Any) -> bytes:
        """A key for this lease alone, authorized on each of its host logins until the lease's
        longest life is over; returned for node 0 and not kept here."""
        from ...keys import generate_ed25519
        from ...parallel import parallel
        from ...paths import plain_name
        tag = key_tag(plain_name(lease.id, "lease id"))   # a line of authorized_keys: no space, no newline
        until = (lease.max_deadline + KEY_EXPIRY_MARGIN).strftime("%Y%m%d%H%M%SZ")
        logins = list({(m.host, m.port, m.user): m for m in lease.machines}.values())
        events.phase("handoff", f"authorizing a key for lease {lease.id} alone on {len(logins)} host login(s), "
                                f"until {until}")
        directory = Path(tempfile.mkdtemp(prefix="fleet-lease-key-"))
        try:
            key = directory / "id_ed25519"
            public = generate_ed25519(key, comment=tag)
            line = f'expiry-time="{until}" {public} {tag}'
            parallel(logins, lambda m: _install(m, line))
            # Node 0 must reach every machine with it: a host whose sshd reads keys from elsewhere
            # (AuthorizedKeysFile) or knows no expiry-time would fail the run there, later and less clearly.
            parallel(logins, lambda m: _check(m, key))
            return key.read_bytes()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def finish(self, lease: Any, directory: Path) -> None:
        """The lease is released (its key revoked on every host): its copy here goes too, and so
        does everything else of the run's on this host that stays up (fleet's package, the outputs
        it fetched before uploading them to the store, its FLEET_HOME). Its log and events stay."""
        from ...deep_trees import rmtree     # the outputs are as deep as the run made them
        for name in ("home", "exp", "pkg"):
            rmtree(directory / name, ignore_errors=True)
        (directory / "pkg.tar.gz").unlink(missing_ok=True)


def _check(machine: Any, key: Path) -> None:
    from dataclasses import replace
    from ...errors import InfrastructureError
    from ...remote.ssh import open_connection
    try:   # a connection of its own with that key alone (no agent, no other keys, no run's pool)
        with open_connection(replace(machine, key_path=str(key)), timeout=30) as session:
            session.run(["true"], timeout=30)
    except InfrastructureError as exc:
        raise InfrastructureError(
            f"host {machine.provider_ref.get('host')} does not accept the lease's key added to "
            f"{machine.user}'s ~/.ssh/authorized_keys ({exc.one_line()}): node 0's supervisor could not reach it",
            hint="let that sshd read ~/.ssh/authorized_keys (OpenSSH 8.2 or later, for expiry-time), or run "
                 "`fleet up -d` with the supervisor on this computer (a SQLite state)") from None


def revoke_lease_key(machine: Any, lease_id: str) -> None:
    """Take lease `lease_id`'s key line out of `machine`'s login's authorized_keys (REVOKE)."""
    from ...remote.ssh import connect
    with connect(machine, timeout=10) as session:
        session.run(["sh", "-c", REVOKE.format(tag=shlex.quote(key_tag(lease_id)))], timeout=60, deadline_s=60)


class ReleasedWithKeys(ReleasedFromAnywhere):
    """The ssh provider's `ReleasedFromAnywhere`: a team-host lease is released (processes ended, slots
    freed, this lease key revoked) from any computer that holds the owner's keys to its hosts."""

    def why_not_released_here(self, lease: Any) -> str | None:
        return missing_host_keys(lease)


def missing_host_keys(lease: Any) -> str | None:
    """Why this computer cannot release `lease` (end its processes, revoke its key): the owner's
    keys to its hosts, which its machines name, are not here. None when they all are."""
    for m in lease.machines:
        if m.workdir and m.key_path and not Path(m.key_path).expanduser().is_file():
            return (f"the key to host {m.provider_ref.get('host') or m.host} ({m.key_path}) is not on this "
                    "computer: run `fleet reap` where the lease's owner keeps the keys to its hosts")
    return None


def _install(machine: Any, line: str) -> None:
    from ...remote.ssh import connect
    with connect(machine, timeout=30) as session:
        session.run(["sh", "-c", _INSTALL.format(line=shlex.quote(line))], timeout=60)
