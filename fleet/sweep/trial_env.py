"""A trial's environment section without probing the machines again when nothing it describes changed.

Every trial's record carries what its machines were (fleet/environment/: OS, Python, the venv's
packages with their hashes, the project's lock files). On a warm pool the probe that finds out is
one more remote Python start per trial (and nvidia-smi on real GPUs), for an answer that is almost
always the pool's own, captured after setup. So the pool remembers, per machine, the answer and the
*state* it was read from: a hash of the stat (ctime included, which no one can set back) of every
file the probe reads — the venv's interpreter and pyvenv.cfg, its site-packages directories, each
package's dist-info, METADATA and RECORD and the files RECORD lists without a hash (the probe hashes
those), the code directory's top-level files (the lock files) and /etc/os-release. The state is read
in the same remote command as the reset between trials (fleet/sweep/reset.py), so it costs no
process of its own; the pool's baseline is read beside its own probe.

A trial reuses the remembered answer only when each of its machines' latest state equals the state
that answer was read from; otherwise (a trial ran `pip install`, wrote into the code directory, a
reset could not be confirmed) it probes as any run does, and that answer is remembered with the
state read just before it. A rerun's pinned comparison always probes. Where slots share a machine,
a state is trusted only while no other trial runs there: one still running when a reset read the
state, or started since, could have changed the venv after the read (a probe would see that), so
the next trial there probes.
"""
from __future__ import annotations

import json
import shlex
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, NamedTuple

from ..run.machines import SSHMachines

if TYPE_CHECKING:
    from ..environment.model import MachineEnvironment, RunEnvironment
    from ..models import Lease, Machine

# Standard library only; defines env_state(venv, code) for the reset snippet and the baseline below.
ENV_STATE = r'''
def _walk(top):
    # os.walk(top) as it goes (topdown, dirs prunable, a link to a directory listed, never entered,
    # an unreadable directory skipped) on an explicit stack: before Python 3.12 os.walk recurses once
    # per level, and a trial's `cp -r . sub/` in a loop makes a tree deeper than the stack.
    import os
    todo = [top]
    while todo:
        base = todo.pop()
        dirs, files, into = [], [], {}
        try:
            with os.scandir(base) as it:
                for e in it:
                    try:
                        is_dir = e.is_dir()
                    except OSError:
                        is_dir = False
                    (dirs if is_dir else files).append(e.name)
                    into[e.name] = is_dir and not e.is_symlink()
        except OSError:
            continue
        yield base, dirs, files
        todo += [os.path.join(base, d) for d in reversed(dirs) if into.get(d)]


def env_state(venv, code):
    import csv, glob, hashlib, os
    h = hashlib.sha256()
    def st(p):
        try:
            s = os.stat(p)
            h.update(("%s %d %d %d %d\n" % (p, s.st_mtime_ns, s.st_ctime_ns, s.st_size, s.st_ino)).encode())
        except OSError:
            h.update(("%s -\n" % p).encode())
    if not venv:
        return None
    python = os.path.join(venv, "bin", "python")
    st(python); st(os.path.realpath(python)); st(os.path.join(venv, "pyvenv.cfg")); st("/etc/os-release")
    h.update(os.path.realpath(python).encode() + b"\n")
    for site in sorted(glob.glob(os.path.join(venv, "lib*", "python*", "site-packages"))):
        st(site)
        try:
            names = sorted(os.listdir(site))
        except OSError:
            continue
        for name in names:
            if not name.endswith(".dist-info"):
                continue
            info = os.path.join(site, name)
            st(info); st(os.path.join(info, "METADATA")); st(os.path.join(info, "RECORD"))
            try:
                with open(os.path.join(info, "RECORD"), newline="", encoding="utf-8") as fh:
                    for row in csv.reader(fh):
                        if row and (len(row) < 2 or not row[1]):
                            st(os.path.join(site, row[0]))
            except (OSError, ValueError):
                h.update(b"record unreadable\n")
    st(code)
    try:
        for name in sorted(os.listdir(code)):
            st(os.path.join(code, name))
    except OSError:
        pass
    return h.hexdigest()


def agent_state(agent_dir):
    # fleet's own programs on the machine, which the reset imports and each trial's start runs: what a
    # trial (the same login) edits or adds there would run in the next reset, free to call the
    # machine clean. What Python could import from the directory: each such file's bytes, top level
    # and in packages; __pycache__ aside (the reset deletes it before it imports anything).
    import hashlib, os
    h = hashlib.sha256()
    for base, dirs, files in _walk(agent_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith((".py", ".pyc", ".pyw", ".so", ".pth", ".zip")):
                continue
            p = os.path.join(base, name)
            try:
                with open(p, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            except OSError:
                digest = "-"
            h.update(("%s %s\n" % (os.path.relpath(p, agent_dir), digest)).encode())
    return h.hexdigest()


def code_state(code, data="", budget_s=20.0):
    # Every entry of the staged code and data (lstat, ctime included), less a venv inside the code:
    # a trial that wrote there would hand its change to every later trial, whose records pin the code
    # and data snapshots (read-only modes do not stop root, or a chmod). __pycache__ included: the
    # pool compiled the code and trials write no byte code (bytecode.py), so a .pyc there is planted. None
    # (unread: never "changed") past budget_s: a dataset of millions of files on NFS must not run a
    # reset past its timeout and retire every machine after one trial.
    return _stat_walk((code, data), budget_s)


def site_state(venv, budget_s=10.0):
    # Every entry under the venv's site-packages, the same way, __pycache__ included (a forged .pyc
    # runs instead of its source). The probe trusts RECORD's hashes without reading the files they
    # name, so a library a trial patched in place showed only here. None: no venv, or unread past budget_s.
    import glob, os
    if not venv:
        return None
    return _stat_walk(sorted(glob.glob(os.path.join(venv, "lib*", "python*", "site-packages"))), budget_s)


def _stat_walk(tops, budget_s):
    import hashlib, os, stat, time
    h, end = hashlib.sha256(), time.monotonic() + budget_s
    for top in tops:
        for base, dirs, files in _walk(top) if top else ():
            if "pyvenv.cfg" in files:
                dirs[:] = []
                continue
            dirs.sort()
            if time.monotonic() > end:
                return None
            if os.path.basename(base) == "__pycache__":
                # What Python loads from there: its .pyc. Numba's cache=True (librosa, umap) writes its
                # .nbi/.nbc beside them on a function's first call, whatever PYTHONDONTWRITEBYTECODE says.
                files = [f for f in files if f.endswith(".pyc")]
            for name in dirs + sorted(files):
                p = os.path.join(base, name)
                try:
                    s = os.lstat(p)
                    # A directory by its name, mode and inode, not its times or size: what a trial adds,
                    # removes or edits in it shows as that entry's own line.
                    times = (0, 0, 0) if stat.S_ISDIR(s.st_mode) else (s.st_size, s.st_mtime_ns, s.st_ctime_ns)
                    h.update(("%s %o %d %d %d %d\n" % ((p, s.st_mode) + times + (s.st_ino,))).encode())
                except OSError:
                    h.update(("%s -\n" % p).encode())
    return h.hexdigest()
'''

_BASELINE = ENV_STATE + r'''
import json, sys
print(json.dumps({"env_state": env_state(sys.argv[1], sys.argv[2]), "code_state": code_state(sys.argv[2], sys.argv[3]),
                  "site_state": site_state(sys.argv[1]), "agent_state": agent_state(sys.argv[4])}))
'''


def env_paths(lease: Lease, machine: Machine) -> tuple[str, str, str]:
    """(the lease's venv on the machine or "", the code directory, the data directory): what
    env_state and code_state read."""
    from ..lease_prepare import python_env_dir
    from ..stage import code_dir
    from ..snapshots.sync_remote import data_root
    return python_env_dir(lease, machine.id) or "", code_dir(machine), data_root(machine)


class BaselineState(NamedTuple):
    """A machine's states as setup left them (None: unread): what each reset compares with."""
    env: str | None          # env_state: what the environment probe reads
    code: str | None         # code_state: the staged code and data
    site: str | None         # site_state: the venv's site-packages
    agent: str | None        # agent_state: fleet's own programs beside agent.py


def read_state(lease: Lease, machine: Machine) -> BaselineState:
    """The machine's states now (one short stdlib process)."""
    from ..remote.ssh import connect
    venv, code, data = env_paths(lease, machine)
    try:
        with connect(machine, timeout=20) as s:
            result = s.run(shlex.join([machine.python, "-I", "-S", "-c", _BASELINE, venv, code, data,
                                       agent_dir(machine)]), check=False, timeout=60)
        got = json.loads(result.stdout.strip().splitlines()[-1])
        return BaselineState(got.get("env_state"), got.get("code_state"), got.get("site_state"), got.get("agent_state"))
    except Exception:  # noqa: BLE001 — no state: the trials probe as any run does
        return BaselineState(None, None, None, None)


def agent_dir(machine: Machine) -> str:
    return machine.agent_path.rsplit("/", 1)[0]


class TrialEnvironments:
    """Per machine: its latest environment state, and the probe answers remembered with theirs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, str | None] = {}
        self.known: dict[str, tuple[str, MachineEnvironment, str | None]] = {}
        self.reused = self.probed = 0
        self.live: dict[str, set[str]] = {}       # per machine: trials that may run there (begun, not reset)
        self.code: dict[str, str | None] = {}     # per machine: its staged code's state after setup
        self.site: dict[str, str | None] = {}     # per machine: its venv's site-packages state after setup
        self.agent: dict[str, str | None] = {}    # per machine: its agent directory's state after setup
        self.begun: dict[str, int] = {}           # per machine: how many trials have begun there

    def begin(self, lease: Lease, run_id: str) -> None:
        """The trial `run_id` is about to run its command on the lease's machines."""
        with self.lock:
            for m in lease.machines:
                self.live.setdefault(m.id, set()).add(run_id)
                self.begun[m.id] = self.begun.get(m.id, 0) + 1

    def resetting(self, machine_id: str, run_id: str) -> tuple[int, bool]:
        """A reset after `run_id` begins on the machine (its processes end before the state is read);
        the token `saw` checks: whether another trial ran there when it began, and how many had begun."""
        with self.lock:
            self.live.get(machine_id, set()).discard(run_id)
            self.current[machine_id] = None       # unknown until this reset says
            return self.begun.get(machine_id, 0), bool(self.live.get(machine_id))

    def saw(self, machine_id: str, state: str | None, token: tuple[int, bool] | None = None) -> None:
        """The machine's state, read by a reset (with `resetting`'s token) or beside the pool's probe."""
        with self.lock:
            if token is not None:
                begun, others = token
                if others or self.live.get(machine_id) or self.begun.get(machine_id, 0) != begun:
                    state = None                  # another trial could change it after the read
            self.current[machine_id] = state

    def learn(self, lease: Lease, env: RunEnvironment | None, states: dict[str, str | None]) -> None:
        """`env` was probed on the lease's machines while each was in `states` (its latest, read
        before the probe with nothing of the experiment run since)."""
        if env is None or env.pinned_from:
            return
        from ..environment.capture import kind_of
        by_kind = {me.kind: me for me in env.machines}
        with self.lock:
            for m in lease.machines:
                me = by_kind.get(kind_of(lease.provider, m, lease.template))
                if states.get(m.id) and me is not None:
                    self.known[m.id] = (states[m.id], me, env.wheels_snapshot)

    def states_of(self, lease: Lease) -> dict[str, str | None]:
        with self.lock:
            return {m.id: self.current.get(m.id) for m in lease.machines}

    def reuse(self, lease: Lease) -> RunEnvironment | None:
        """The environment of the lease's machines as remembered, when every one of them is still in
        the state its answer was read from; else None (probe)."""
        from ..environment.capture import kind_of
        from ..environment.model import RunEnvironment
        groups: dict[str, list[MachineEnvironment]] = {}
        wheels: set[str | None] = set()
        with self.lock:
            for m in sorted(lease.machines, key=lambda m: m.node_rank):
                now, known = self.current.get(m.id), self.known.get(m.id)
                if now is None or known is None or known[0] != now or self.live.get(m.id):
                    return None
                me = known[1]
                if me.gpu.simulated:   # the probe's answer there: the slots this run's machine holds
                    me = replace(me, gpu=replace(me.gpu, count=len(m.gpu_slots)))
                groups.setdefault(kind_of(lease.provider, m, lease.template), []).append(me)
                wheels.add(known[2])
        if not groups or len(wheels) != 1 or any(replace(e, machines=0) != replace(es[0], machines=0)
                                                 for es in groups.values() for e in es):
            return None
        return RunEnvironment(machines=tuple(replace(es[0], machines=len(es)) for es in groups.values()),
                              wheels_snapshot=wheels.pop(), capture_s=0.0)


# $1 the copy, $2 the staged code. The code's siblings (data/, …) are linked beside the copy, so a
# relative path such as ../data reads the same in a trial as in a run; a venv inside the code (uv
# sync's .venv) is linked, not copied (it is the pool's environment, and large). The whole trial
# directory is made anew, not only the copy: the last trial's `../results`, or a `../data` it replaced
# with a directory of its own (ln -sfn then links inside it), was read by the next trial through `..`.
_FRESH_COPY = r"""
C=$1; W=$2; P=$(dirname "$C")
rm -rf "$P" && mkdir -p "$C" || exit 1
for e in "$(dirname "$W")"/* "$(dirname "$W")"/.[!.]*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  n=$(basename "$e"); [ "$n" = "$(basename "$W")" ] || [ "$e" = "$P" ] || [ "$n" = trials ] || ln -sfn "$e" "$P/$n"
done
[ -d "$W" ] || exit 0
for e in "$W"/* "$W"/.[!.]* "$W"/..?*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  if [ -f "$e/pyvenv.cfg" ]; then ln -s "$e" "$C/"
  else cp -a --reflink=auto "$e" "$C/" 2>/dev/null || cp -a "$e" "$C/" || exit 1
  fi
done
"""


def fresh_code_copies(lease: Lease, leaf: str) -> None:
    """Each machine's copy of the code directory for this trial's slot, made anew from the staged
    code (a reflink where the filesystem has them): the trial runs there (execute.py)."""
    from ..parallel import parallel
    from ..remote.ssh import connect
    from ..stage import code_dir, trial_code_dir

    def one(m: Machine) -> None:
        with connect(m, timeout=30) as session:
            session.run(["sh", "-c", _FRESH_COPY, "fresh-copy", trial_code_dir(m, leaf), code_dir(m)],
                        timeout=120, deadline_s=600)
    parallel(lease.machines, one)


class TrialMachines(SSHMachines):
    """A trial's machines: as any run's, except that the environment comes from the pool's memory
    when the machines provably did not change since it was read, and that `after_collect(run_id)`
    is told once the outputs are home (the scheduler resets the machines while the record is written)."""

    def __init__(self, environments: TrialEnvironments, after_collect: Callable[[str], None] | None = None,
                 reset_done: Callable[[], None] | None = None):
        """`reset_done`: waits until the last trial's reset on these machines is over. The trial's
        run begins beside that reset (its record, its checkpoint directory), but neither reads the
        machines' environment nor starts its command before it: the reset empties the very cgroup
        leaf the command runs in, and reads the state the environment is reused by."""
        self.environments, self.after_collect, self.reset_done = environments, after_collect, reset_done

    def _after_reset(self) -> None:
        if self.reset_done is not None:
            self.reset_done()
            self.reset_done = None

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None):
        self._after_reset()
        if not setup and ctx.options.trial_leaf:
            fresh_code_copies(lease, ctx.options.trial_leaf)
        try:
            return super().execute(ctx, lease, command, setup=setup, on_tick=on_tick)
        finally:
            from ..rendezvous import release_run_port
            release_run_port(ctx.state, lease)

    def collect(self, ctx, lease):
        got = super().collect(ctx, lease)
        if self.after_collect is not None and not ctx.hurry.is_set():
            self.after_collect(ctx.run_id)
        return got

    def capture_environment(self, ctx, lease, store, pinned) -> RunEnvironment:
        self._after_reset()
        if pinned is None:
            reused = self.environments.reuse(lease)
            if reused is not None:
                with self.environments.lock:
                    self.environments.reused += 1
                self.environments.begin(lease, ctx.run_id)
                return reused
        states = self.environments.states_of(lease)
        self.environments.begin(lease, ctx.run_id)
        env = super().capture_environment(ctx, lease, store, pinned)
        with self.environments.lock:
            self.environments.probed += 1
        self.environments.learn(lease, env, states)
        return env
