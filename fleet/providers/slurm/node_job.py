"""The node step's dealings with its own Slurm job (fleet/providers/slurm/node.py runs them on the node):
KillWait, its time from Slurm's SIGTERM to the SIGKILL, and leaving the job at a machine's deadline.

Standard library only: steps.py sends this text to the node ahead of node.py's, whose python may be
older than fleet's."""
import re
import subprocess


def _slurm(argv):
    """(exit status, stdout) of a Slurm command run from this node; (-1, "") when it cannot run."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              timeout=60, universal_newlines=True)
        return done.returncode, done.stdout
    except (OSError, subprocess.SubprocessError):
        return -1, ""


def _field(text, key):
    found = re.search(r"(?:^|\s)" + key + r"=(\S*)", text)
    return found.group(1) if found else None


def _kill_wait(found):
    """Slurm's KillWait: what this node has, from its SIGTERM, to end the machine before the SIGKILL."""
    rc, out = _slurm(["scontrol", "show", "config"])
    match = re.search(r"^KillWait\s*=\s*(\d+)", out, re.M) if rc == 0 else None
    if match:
        found.append(int(match.group(1)))


def _leave_job(job_id, node, released):
    """This machine reached its deadline and has ended: give its node back, or cancel the job when no
    other fleet machine of it is left (True then). A stale NodeList is read again; the batch step's node
    cannot leave (Slurm refuses), so it waits to be the last. Slurm kills this step once its node left."""
    delay = 1.0
    while not released.is_set():
        rc, text = _slurm(["scontrol", "show", "job", "--oneliner", job_id])
        state = _field(text, "JobState") if rc == 0 else None
        if rc == 0 and state not in ("RUNNING", "SUSPENDED", "STOPPED"):
            return False                      # ending or ended (or forgotten): nothing to give back
        if state == "RUNNING":
            rc_nodes, hosts = _slurm(["scontrol", "show", "hostnames", _field(text, "NodeList") or node])
            rc_steps, names = _slurm(["squeue", "--steps", f"--jobs={job_id}", "--noheader", "--format=%j"])
            others = [n for n in hosts.split() if n != node]
            if rc_nodes == 0 and rc_steps == 0 and not [n for n in others if f"fleet-node-{n}" in names.split()]:
                _slurm(["scancel", job_id])
                return True
            batch = _field(text, "BatchHost") if _field(text, "BatchFlag") not in (None, "0") else None
            if rc_nodes == 0 and others and node != batch and _slurm(
                    ["scontrol", "update", f"JobId={job_id}", f"NodeList={','.join(others)}"])[0] == 0:
                return False
        released.wait(delay)                  # Slurm unreachable, suspended, or a stale NodeList: again
        delay = min(10.0, delay * 1.5)
    return False
