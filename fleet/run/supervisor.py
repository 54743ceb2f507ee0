"""The detached supervisor: `fleet up --detach` runs the whole run pipeline in this process.

It calls the same `fleet.run.recovery.run_managed` (the pipeline, attempt by attempt) that an
attached `fleet up` calls, not a copy: it heartbeats the machines, meters and enforces the budget,
writes the rank logs into the run's directory, collects the outputs, releases the machines, closes
the ledger, appends the run record, and resumes on new machines after a loss where allowed. The only
difference is where its progress goes: to `events.jsonl` in its directory under
`$FLEET_HOME/supervisors/<run-id>/`, which the launching CLI follows until staging is done, and
which nothing needs afterwards (logs and the final summary are in the run's state).

Started by fleet/run/detach.py in a session of its own (no controlling terminal: closing the shell
or killing the CLI does not reach it). It proves it is fleet's own the way every controller does:
its run row names it (`controller_identity`: boot id, pid namespace, pid and start time), its
command line names this module and the run id, and its `identity.json` says the same for the
cheap check every `fleet` command makes (fleet/run/detach.py `reconcile`).

No orphans: the kernel ends it (SIGALRM, default action) at the lease's longest possible life
(times the attempts recovery allows) plus a margin for staging, collecting and releasing, whatever
state it is in; its machines end
by their own watchdog deadline once its heartbeat stops; and the next `fleet` command that finds
it gone releases its lease, bills what the ledger lacks and records the run as lost.

On AWS (with a PostgreSQL state and an S3 store) the supervisor runs on node 0 of the run's lease
instead (fleet/run/node_launch.py, fleet/run/node_supervisor.py), so that nothing extra has to be
kept alive and paid for (docs/managed-runs.md); on a Slurm cluster reached over SSH it runs on
the cluster's login node (fleet/run/login_launch.py); the local provider's machines run on this
computer, and other providers (and Slurm with fleet on the login node itself) keep this background
process of this computer, which ignores SIGHUP in its own session: it outlives the ssh session or
terminal it was started from.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..detached_check import IDENTITY, SUPERVISORS

MODULE = "fleet.run.supervisor"
# Beyond max_duration: planning, pinning, leasing and staging happen before the lease's clock
# starts, collecting and releasing after it ends.
LIFETIME_MARGIN_S = 900
SPEC, EVENTS, LOG = "spec.json", "events.jsonl", "supervisor.log"


def supervisors_root() -> Path:
    from ..paths import fleet_home
    return fleet_home() / SUPERVISORS


def new_supervisor_dir(run_id: str) -> Path:
    """The run's supervisor directory, made; it and its parent the user's alone (0700), like every
    directory fleet makes in FLEET_HOME, whatever the umask."""
    from ..paths import subdir
    directory = subdir(SUPERVISORS) / run_id
    directory.mkdir(mode=0o700)
    return directory


def supervisor_dir(run_id: str) -> Path:
    return supervisors_root() / run_id


@dataclass(frozen=True)
class SupervisorSpec:
    """What the launching CLI asked for, handed to the supervisor as JSON (no secret values: the
    supervisor inherits the CLI's environment, where secrets come from)."""

    run_id: str
    cwd: str
    config_file: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)   # load_config's overrides, as the CLI built them
    keep_s: int | None = None
    allow_dirty: bool = False
    queue_wait_s: float | None = None
    resume: str | None = None           # `--resume RUN`
    continues: bool = False             # the reaper's resume of RUN: its next attempt `<run>-aN`, same record

    def write(self, directory: Path) -> Path:
        """spec.json, without the [env] overrides (`--env`, `--env-file`): their values may be secret,
        so they travel on the supervisor's stdin (env_line) and are never written down."""
        path = directory / SPEC
        data = asdict(self)
        data["overrides"] = {k: v for k, v in self.overrides.items() if k != "env"}
        # The user's alone, like identity.json: it holds the command line a shell expanded.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, sort_keys=True))
        return path

    def env_line(self) -> bytes:
        return (json.dumps(self.overrides.get("env") or {}) + "\n").encode()

    def with_env_line(self, line: str) -> "SupervisorSpec":
        env = json.loads(line or "{}")
        if not env:
            return self
        from dataclasses import replace
        return replace(self, overrides={**self.overrides, "env": env})

    @classmethod
    def read(cls, path: Path) -> "SupervisorSpec":
        return cls(**json.loads(path.read_text()))

    def options(self):
        from .types import RunOptions
        return RunOptions(keep_s=self.keep_s, allow_dirty=self.allow_dirty, queue_wait_s=self.queue_wait_s,
                          run_id=self.run_id, detached=True)


class FileEvents:
    """Events as JSON lines, each flushed at once: the launching CLI (and `fleet attach` on this
    computer) reads them as they come. Experiment output is not repeated here: it is in the
    run's rank logs already, which `fleet logs` reads."""

    def __init__(self, path: Path):
        self._fh = open(path, "a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def _write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._fh.write(json.dumps({"t": round(time.time(), 3), **record}) + "\n")
            self._fh.flush()

    def phase(self, name: str, detail: str = "") -> None:
        self._write({"kind": "phase", "name": name, "detail": detail})

    def log(self, label: str, stream: str, line: str) -> None:
        pass

    def warn(self, message: str) -> None:
        self._write({"kind": "warn", "message": message})

    def ended(self, summary_json: dict[str, Any]) -> None:
        self._write({"kind": "end", "summary": summary_json})

    def failed(self, message: str, exit_code: int) -> None:
        self._write({"kind": "error", "message": message, "exit_code": int(exit_code)})

    def close(self) -> None:
        self._fh.close()


def die_with_lease(config) -> int:
    """Arm the kernel's own timer: SIGALRM with its default action ends this process, even if
    Python is stuck, once every attempt the run may make (1, or 1 + max_restarts with recovery)
    has had its lease's longest life plus the margin."""
    attempts = 1 if config.recovery == "never" else 1 + config.max_restarts
    seconds = attempts * (int(config.max_duration_s) + LIFETIME_MARGIN_S)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(seconds)
    return seconds


def _write_identity(directory: Path, run_id: str, cwd: str, state_url: str | None = None) -> None:
    """Who supervises run_id (proved before anyone signals it), and the state its run lives in
    (once the config is read; until then where it was started, whose fleet.toml names it), which a
    later `fleet` command run elsewhere must open to reconcile it, not whichever state that
    command's own directory or environment names. The file is the user's alone (FLEET_HOME)."""
    from ..lost_runs import controller_identity
    from ..state.postgres import without_password
    tmp = directory / f".{IDENTITY}.tmp"
    fields: dict[str, object] = {"run_id": run_id, "cwd": cwd}
    if state_url is not None:
        # Not its password (FLEET_STATE_URL may be where it came from, never on disk before): the
        # command that reconciles the run takes it from its own configured URL for the same database.
        fields["state_url"] = without_password(state_url)
        fields["state_url_password"] = fields["state_url"] != state_url
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({**controller_identity(), **fields}))
    os.replace(tmp, directory / IDENTITY)


def state_url_of(ident: dict[str, Any]) -> str:
    """The state the supervised run lives in, whatever directory reconciles it: the one its
    supervisor recorded; for one that died before it read its config, FLEET_STATE_URL, else the
    `state_url` of the fleet.toml where it was started, else this computer's default."""
    from ..paths import fleet_home
    from ..state import configured_state_url
    cwd = ident.get("cwd")
    configured = [u for u in (os.environ.get("FLEET_STATE_URL"),
                              configured_state_url(Path(cwd)) if isinstance(cwd, str) and cwd else None,
                              configured_state_url()) if u]
    url = ident.get("state_url")
    if not isinstance(url, str):
        url = configured[0] if configured else ""
    elif ident.get("state_url_password") is True:
        # Recorded without its password: the configured URL for the same database, which has it;
        # else libpq's own PGPASSWORD or ~/.pgpass.
        from ..state.postgres import without_password
        url = next((u for u in configured if without_password(u) == url), url)
    return url or f"sqlite:///{fleet_home() / 'state.db'}"


def _resolved_state_url(config, cwd: str) -> str:
    """The state this supervisor records its run in, as any directory can open it: a relative
    SQLite path made absolute against the directory it runs in; "" for this computer's default."""
    from .remote_supervisor import supervisor_state_url
    url = supervisor_state_url(config)
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if path and not os.path.isabs(path):
        return "sqlite:///" + os.path.join(cwd, path)
    return url


def main(argv: list[str]) -> int:
    from ..errors import ExitCode, FleetError
    spec_path = Path(argv[0])
    directory = spec_path.parent
    spec = SupervisorSpec.read(spec_path).with_env_line(sys.stdin.readline())   # then stdin is at its end
    # Read once: its command may hold a secret the shell expanded; nothing needs the file again.
    spec_path.unlink(missing_ok=True)
    # In a session of its own already (detach.launch); a hangup sent to it anyway (a login node's
    # ssh session ending, a terminal multiplexer closing) is no reason to end a run.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _write_identity(directory, spec.run_id, spec.cwd)
    events = FileEvents(directory / EVENTS)
    code: int = ExitCode.INFRASTRUCTURE
    beat = None
    try:
        os.chdir(spec.cwd)
        from ..config.loader import load_config
        config = load_config(Path(spec.config_file) if spec.config_file else None, overrides=spec.overrides)
        _write_identity(directory, spec.run_id, spec.cwd, _resolved_state_url(config, spec.cwd))
        die_with_lease(config)
        beat = _start_beat(config, spec.run_id)
        from ..ci import masked_events
        from .recovery import run_managed
        options = spec.options()
        if spec.resume:
            from .resume_attempt import resume_options
            options = resume_options(options, config, spec.resume, check_owner=False)   # the launcher checked
        summary = run_managed(config, options=options, events=masked_events(config, events))
        events.ended(summary.to_json())
        code = summary.exit_code
    except FleetError as exc:
        events.failed(exc.one_line(), exc.exit_code)
        code = exc.exit_code
    except BaseException as exc:  # noqa: BLE001 — the launcher shows one line; the traceback goes to the log
        import traceback
        traceback.print_exc()
        events.failed(f"the detached supervisor failed: {type(exc).__name__}: {exc}", ExitCode.INFRASTRUCTURE)
    finally:
        events.close()
        # Ended on its own: nothing for the next `fleet` command to reconcile.
        if beat is not None:
            beat.stop()
        (directory / IDENTITY).unlink(missing_ok=True)
    return int(code)


def _start_beat(config, run_id: str):
    """The beat other computers sharing the state judge this supervisor by (fleet/run/supervisor_beat.py):
    /proc proves it only here."""
    from ..state import open_state
    from .supervisor_beat import SupervisorBeat
    return SupervisorBeat(open_state(config.state_url), run_id).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
