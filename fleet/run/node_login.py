"""Who node 0's supervisor runs as (fleet/run/node_launch.py): the machine's supervisor login, not
the experiment's, and only where the experiment's login cannot become root (then it could read the
supervisor's memory and rewrite its code: SECURITY.md, "The supervisor on node 0")."""
from __future__ import annotations

REMOTE_DIR = ".fleet-supervisor"   # in the workdir: only where a machine names no supervisor login

# What the experiment's login on node 0 may become: its uid, and whether sudo needs no password.
# One marked line (a login's rc files may print before it): uid, groups, passwordless sudo or not.
ROOT_CHECK = ('printf "fleet-root-check %s %s %s\\n" "$(id -u)" "$(id -Gn | tr " " ,)" '
              '"$(sudo -n true </dev/null >/dev/null 2>&1 && echo sudo || echo nosudo)"')
ROOT_GROUPS = ("docker", "lxd", "disk")     # a member reaches root through the group's socket or devices


def supervisor_login(node0):
    """node 0 as its supervisor logs in (the machine's supervisor user, the lease's key) and that
    user's directory for the run's supervisor (relative: to that user's home). A machine that names
    no supervisor login (made by an older fleet, or a team host whose entry names none) gets the
    experiment's own user and workdir: the separation is then missing."""
    from dataclasses import replace
    user = node0.provider_ref.get("supervisor_user")
    directory = node0.provider_ref.get("supervisor_dir")
    if not user or not directory:
        return node0, f"{node0.workdir}/{REMOTE_DIR}"
    python = node0.provider_ref.get("supervisor_python") or node0.python
    return replace(node0, user=str(user), workdir=str(directory), python=str(python)), str(directory)


def root_reach(answer: str) -> str | None:
    """Why ROOT_CHECK's output says its user could become root; None: it could not. No marked
    answer counts as could: the check fails closed."""
    for words in (line.split() for line in answer.splitlines()):
        if words[:1] == ["fleet-root-check"] and len(words) == 4:
            groups = sorted(set(words[2].split(",")) & set(ROOT_GROUPS))
            return ("is root" if words[1] == "0" else "has passwordless sudo" if words[3] == "sudo"
                    else f"is in group {groups[0]}, which reaches root" if groups else None)
    return "did not answer the root check"


def refuse_root_capable_login(node0, login) -> None:
    """The supervisor's user is out of the experiment's reach only while the experiment cannot
    become root: an image (or team host) whose experiment login has passwordless sudo undoes it,
    so the run is not supervised from there (the launcher then releases the lease)."""
    from ..errors import UsageError
    from ..remote.ssh import wait_ready
    if login.user == node0.user:
        return    # one user for both (a machine that names no supervisor login): nothing to keep apart
    with wait_ready(node0, timeout=600) as session:
        why = root_reach(session.run(ROOT_CHECK, check=False, timeout=60).stdout)
    if why:
        raise UsageError(f"node 0's login {node0.user} {why}: the experiment could read the credentials of a "
                         "supervisor there", hint="use an image (or host login) with no sudo, or a supervisor on "
                                                  "this computer (a SQLite state, or --keep)")
