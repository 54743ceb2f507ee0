"""Between two trials on a warm machine: end whatever the last trial left running and remove its
output directory, so the next trial starts from the state setup left, not from the last trial's.

Where the machine has a cgroup unit, a trial runs in its own leaf (<unit>/trial-N, `agent exec
--leaf trial-N`, N its slot on the machine), and that leaf is emptied: nothing the trial started survives, however it
daemonised. Everywhere (and as a second net) processes carrying the trial's tag
(FLEET_RUN_ID=<its run id>) are ended, each verified by its start time before it is signalled
(containment.py on the machine, the watchdog's own rules): nothing that is not provably the
trial's is touched. The machine's own processes (sshd in work/, the watchdog in agent/) stay.

The same short process then reads the machine's environment state (fleet/sweep/trial_env.py), so
the next trial can reuse the environment its record would otherwise probe for again.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ..models import Machine
from ..remote import mounts
from .trial_env import ENV_STATE

# What the trial mounted in its outputs (as root: a bound host directory) is detached, not deleted through.
MOUNTS = mounts.source() + "\n"

# Runs on the machine with its own python (-S: standard library only), beside agent.py. The modules the
# agent uses are taken from it: a machine that received the agent as one file (AWS user data, Slurm)
# has no containment.py of its own to import.
_SNIPPET = ENV_STATE + MOUNTS + r"""
import json, os, shutil, sys


def rmtree(path):
    # rm -rf where the tree is deeper than Python's stack: rmtree recurses once per level, and on a
    # trial's tree 1,000 levels deep its RecursionError would end this reset unanswered ("not clean").
    try:
        shutil.rmtree(path, ignore_errors=True)
    except RecursionError:
        import subprocess
        subprocess.run(["rm", "-rf", "--", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


# The agent's programs as the pool found them after setup, before any of them runs here: a trial (the
# same login) that edited or added one would run inside this reset, free to call the machine clean. Its
# byte code goes (imports compile it again from the checked sources); a link there is unlinked, never followed.
# A heartbeat's `agent.py extend` or another slot's trial start beside this reset writes the cache again
# at any moment (they import the modules beside agent.py): a cache back at once is removed again, and
# only one that stays through every try is taken for the trial's.
cache = os.path.join(sys.argv[1], "__pycache__")
for _ in range(5):
    if os.path.islink(cache) or os.path.isfile(cache):
        os.unlink(cache)
    else:
        rmtree(cache)
    if not os.path.lexists(cache):
        break
    import time
    time.sleep(0.05)
if sys.argv[10] and (os.path.lexists(cache) or agent_state(sys.argv[1]) != sys.argv[10]):
    print(json.dumps({"clean": False, "agent_changed": True, "ended": 0}))
    sys.exit(0)
sys.path.insert(0, sys.argv[1])
import agent
containment, agent_args = agent.containment, agent.agent_args
run_id, out_dir, state_dir, machine_id, leaf = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
venv, code, data = sys.argv[7], sys.argv[8], sys.argv[9]
unit = agent._unit_of(agent.read_isolation(sys.argv[1]), machine_id)
leaf_path = os.path.join(unit, agent_args.leaf_name(leaf)) if unit else None
# What the trial left running in its leaf (its command has ended): counted before the leaf is emptied,
# so the sweep can say so; the leaf's own processes are not tagged ones found below.
left = len(set(containment.members(leaf_path))) if leaf_path and os.path.isdir(leaf_path) else 0
leaf_clean = containment.kill_unit(leaf_path, timeout=30) if unit else None
needle = ("FLEET_RUN_ID=" + run_id).encode()
me = {os.getpid(), os.getppid()}
found = []
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) in me:
        continue
    before = containment.start_time(name)
    try:
        with open("/proc/%s/environ" % name, "rb") as fh:
            env = fh.read().split(b"\0")
    except OSError:
        continue
    if needle in env and before is not None and containment.start_time(name) == before:
        found.append((int(name), before))
clean = containment.kill_verified(found, grace_s=1.0) if found else True
if os.path.islink(out_dir):   # outputs linked elsewhere: the link goes, never what it points at
    try:
        os.unlink(out_dir)
    except OSError:
        pass
elif not detach_mounts_under(out_dir):     # a mount that stays: never deleted through (outputs_left says so)
    rmtree(out_dir)
for f in os.listdir(state_dir):
    if f.startswith("run-" + run_id + "-") and f.endswith(".pid"):
        try:
            os.unlink(os.path.join(state_dir, f))
        except OSError:
            pass
try:
    state = env_state(venv, code)
except Exception:
    state = None
try:
    staged = code_state(code, data)
except Exception:
    staged = None
try:
    site = site_state(venv)
except Exception:
    site = None
# Where trials write: a trial that filled the disk (or its inodes) there left every later trial on the
# machine to fail fast. Below the floor (5% of the filesystem, at most 1 GiB / 10,000 inodes) it is said.
low, seen = [], set()
for label, path in (("$HOME", os.path.expanduser("~")), ("the temp directory", os.environ.get("TMPDIR") or "/tmp"),
                    ("the workdir", os.path.dirname(os.path.dirname(out_dir)))):
    try:
        fs, dev = os.statvfs(path), os.stat(path).st_dev
    except OSError:
        continue
    if dev in seen:
        continue
    seen.add(dev)
    free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
    if total and free < min(1 << 30, total // 20):
        low.append("%s (%s) has %d MiB free of %d MiB" % (label, path, free >> 20, total >> 20))
    if fs.f_files and fs.f_favail < min(10000, fs.f_files // 20):
        low.append("%s (%s) has %d inodes free of %d" % (label, path, fs.f_favail, fs.f_files))
print(json.dumps({"low_space": "; ".join(low) or None, "ended": left + len(found), "clean": bool(clean) and leaf_clean is not False,
                  "cgroup_emptied": leaf_clean, "outputs_left": os.path.lexists(out_dir), "env_state": state,
                  "code_state": staged, "site_state": site}))
"""


@dataclass(frozen=True)
class ResetResult:
    machine_id: str
    ended: int              # leftover processes of the trial (in its leaf, or by its tag) that were ended
    clean: bool             # nothing of the trial is left (processes, output dir)
    cgroup_emptied: bool | None = None   # its cgroup leaf is empty (None: the machine has no cgroup unit)
    env_state: str | None = None         # the machine's environment state after the reset (trial_env.py)
    code_state: str | None = None        # its staged code's state (trial_env.code_state)
    site_state: str | None = None        # its venv's site-packages state (trial_env.site_state)
    low_space: str | None = None         # where trials write, what is below the floor of free space or inodes
    agent_changed: bool = False          # fleet's programs on the machine differ from the pool's (nothing was reset)


def reset_machine(machine: Machine, run_id: str, leaf: str, env: tuple[str, str, str] = ("", "", ""),
                  agent_state: str | None = None) -> ResetResult:
    """`env`: (the lease's venv on the machine, the code directory, the data directory), whose state
    is read after the reset; `agent_state`: the agent directory's state after setup (None: unread, unchecked)."""
    from ..errors import MachineUnreachable
    from ..remote.ssh import connect
    agent_dir = machine.agent_path.rsplit("/", 1)[0]
    # -I: the session starts in the login's home, where trials write; `-c` would put it first on
    # sys.path, and a re.py a trial left there ran inside the reset.
    argv = [machine.python, "-I", "-S", "-c", _SNIPPET, agent_dir, run_id, f"{machine.workdir}/outputs/{run_id}",
            machine.state_dir, machine.id, leaf, *env, agent_state or ""]
    for attempt in (1, 2):
        with connect(machine, timeout=20) as s:   # one that does not answer raises: not tried again here
            try:
                result = s.run(shlex.join(argv), check=False, timeout=60)
                break
            except MachineUnreachable:
                # The connection dropped under the reset: it is idempotent, so once more on a fresh
                # one. The pooled connection carries the neighbouring trials' channels too: one drop
                # would otherwise fail every reset and outputs transfer then in flight.
                if attempt == 2 or s.active:
                    raise
    try:
        got = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ResetResult(machine.id, 0, False)
    clean = bool(got.get("clean")) and not got.get("outputs_left")
    return ResetResult(machine.id, int(got.get("ended", 0)), clean, got.get("cgroup_emptied"),
                       got.get("env_state") if clean else None, got.get("code_state"),
                       got.get("site_state"), got.get("low_space"), bool(got.get("agent_changed")))
