"""Which Pulumi backend reading `[aws] stack`'s outputs would talk to, checked before pulumi runs.

The outputs are read with the Automation API in the experiment's directory (or `[aws] stack_dir`), so
the Pulumi.yaml found there chooses the backend unless PULUMI_BACKEND_URL does: a cloned repository
whose Pulumi.yaml names `backend: url: https://…` of its author's had pulumi present the user's
credentials there (PULUMI_ACCESS_TOKEN, or the stored login) on a plain `fleet up --provider aws`.
A project backend is used only when it is the one the user is logged in to.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from ...errors import ConfigError


def declared_backend(work_dir: Path) -> str | None:
    """`backend.url` of the Pulumi project file in `work_dir`, if it names one."""
    for name in ("Pulumi.yaml", "Pulumi.yml"):
        path = work_dir / name
        if path.is_file():
            import yaml   # pulumi's own dependency: present wherever the Automation API is
            try:
                data = yaml.safe_load(path.read_text(errors="replace"))
            except (yaml.YAMLError, OSError) as exc:
                raise ConfigError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
            backend = data.get("backend") if isinstance(data, dict) else None
            url = backend.get("url") if isinstance(backend, dict) else None
            return str(url) if url else None
    return None


def logged_in_backend(env: Mapping[str, str]) -> str | None:
    """The backend `pulumi login` chose last (its credentials file's "current")."""
    home = Path(env.get("PULUMI_HOME") or Path(env.get("HOME") or Path.home()) / ".pulumi")
    try:
        current = json.loads((home / "credentials.json").read_text()).get("current")
    except (OSError, ValueError, AttributeError):
        return None
    return str(current) if current else None


def check_stack_backend(work_dir: str | Path, env: Mapping[str, str] | None = None) -> None:
    """Refuse, before pulumi runs, a project backend the user has not logged in to."""
    env = os.environ if env is None else env
    if env.get("PULUMI_BACKEND_URL"):
        return                          # the user's own choice wins over the project's
    declared = declared_backend(Path(work_dir))
    if declared is None:
        return
    current = logged_in_backend(env)
    if current is not None and declared.rstrip("/") == current.rstrip("/"):
        return
    from ...masking import without_url_passwords
    raise ConfigError(f"{Path(work_dir) / 'Pulumi.yaml'} sets Pulumi backend {without_url_passwords(declared)!r}, "
                      f"which is not the one you are logged in to ({without_url_passwords(current or 'none')}): "
                      "fleet will not present your Pulumi credentials there",
                      hint="`pulumi login` to it yourself if you trust it, set PULUMI_BACKEND_URL, or save "
                           "`pulumi stack output --json` to a file and set FLEET_AWS_OUTPUTS")
