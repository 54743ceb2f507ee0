"""What a run's supervisor on another machine (node 0 of its lease, or a Slurm login node) is
handed by the launcher on this computer: fleet's own package, the run's spec with what is reachable
from there (the state URL, the store), and its environment (FLEET_* settings, the run's named
secrets and the AWS credentials resolved here, handed over on stdin, never written there); and what
`fleet reap` starts the run's next attempt from if that supervisor is lost (`relaunch_meta`,
sealed). Shared by fleet/run/node_launch.py and fleet/run/login_launch.py, so both hand over
exactly the same things."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from .supervisor import SupervisorSpec

# Run by `python -I -c` (isolated: -m would need PYTHONPATH, which -I ignores): argv[1] is the directory.
BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1] + '/pkg'); "
             "from fleet.run.node_supervisor import main; sys.exit(main(sys.argv[1:]))")


def supervisor_state_url(config) -> str:
    """The state the run is recorded in: FLEET_STATE_URL (load_config puts it in the config), else
    fleet.toml's, else the configured one."""
    from ..state import configured_state_url
    return config.state_url or os.environ.get("FLEET_STATE_URL") or configured_state_url() or ""


def spec_for_remote(spec: SupervisorSpec, config) -> dict[str, Any]:
    """The spec as the remote supervisor reads it: no local directory or fleet.toml path, and the
    store and state URL it must use (both reachable from there)."""
    from dataclasses import asdict
    data = asdict(spec)
    data["cwd"] = ""
    data["config_file"] = None
    data["overrides"] = {**spec.overrides, "store": config.store, "state_url": supervisor_state_url(config)}
    return data


def remote_env(config) -> dict[str, str]:
    """What the remote supervisor needs in its environment: fleet's own settings (FLEET_*), the run's
    named secrets (`secrets`, FLEET_SECRET_NAMES), and the AWS credentials resolved here (short-lived
    ones as they are now): the S3 store's, and on AWS the provider's. Handed over on stdin; never
    written there or in the state."""
    kept_here = ("FLEET_HOME", "FLEET_STATE_URL", "FLEET_AWS_OUTPUTS",
                 "FLEET_LAUNCH_SEAL_KEY")   # launch_seal.py: never leaves here
    env = {k: v for k, v in os.environ.items() if k.startswith("FLEET_") and k not in kept_here}
    env["FLEET_STATE_URL"] = supervisor_state_url(config)
    # The run's named secrets: the experiment's environment is built there from these, and the
    # supervisor masks their values (in the command, the logs, the record) only if it holds them.
    # Their names go too, so what it runs there (Slurm's tools) leaves them out of a job's environment.
    from ..masking import secret_names
    names = [n for n in secret_names(config) if not n.startswith("FLEET_")]
    env.update({name: os.environ[name] for name in names if name in os.environ})
    if names:
        env["FLEET_SECRET_NAMES"] = ",".join(names)
    for key in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EC2_METADATA_DISABLED"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    from ..boto_sessions import new_session
    creds = new_session().get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        env.update(AWS_ACCESS_KEY_ID=frozen.access_key, AWS_SECRET_ACCESS_KEY=frozen.secret_key)
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
    return env


def fleet_package() -> bytes:
    """fleet's own package as this computer runs it (sources, migrations, the agent, prices)."""
    root = Path(__file__).resolve().parents[1]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(root.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            tar.add(path, arcname=f"fleet/{path.relative_to(root).as_posix()}", recursive=False)
    return buf.getvalue()


def relaunch_meta(config, spec: SupervisorSpec, pins) -> dict[str, Any]:
    """What the reaper needs to start the run's next attempt when its supervisor (node 0's, the login
    node's) is lost (fleet/run/lost_resume.py): where fleet.toml is in the pinned code, and the
    command-line settings, sealed with the pins by this user's key (launch_seal.py). Never the
    --env values (they may be secret) nor the command's text (the run row keeps it, masked; the
    seal covers its sha256)."""
    path = None
    if config.path is not None:
        try:
            path = Path(config.path).resolve().relative_to(Path(config.base_dir).resolve()).as_posix()
        except ValueError:
            path = None
    overrides = {k: v for k, v in spec.overrides.items() if k not in ("env", "command", "state_url", "store")}
    settings = {"config_file": path, "overrides": overrides, "command": bool(spec.overrides.get("command")),
                "env": bool(spec.overrides.get("env"))}
    from .launch_seal import SEAL_FIELD, command_digest, seal
    if settings["command"]:      # the run row keeps the text; the seal says it is still the one launched
        settings["command_sha256"] = command_digest(config.command or "")
    from .lease import pins_meta
    return {**settings, SEAL_FIELD: seal(spec.run_id, config.provider, settings, pins_meta(pins))}


def last_json(text: str) -> dict[str, Any]:
    """The last line of a remote command's output that is JSON (its answer; shells may print before it)."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


__all__ = ["BOOTSTRAP", "fleet_package", "last_json", "relaunch_meta", "remote_env", "spec_for_remote",
           "supervisor_state_url"]
