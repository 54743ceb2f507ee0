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


# pulumi reads any of these, and looks for them up from the working directory to the root: the
# experiment is often a subdirectory of the cloned repository that holds the project file.
PROJECT_FILES = ("Pulumi.yaml", "Pulumi.yml", "Pulumi.json")


def project_files(work_dir: Path, env: Mapping[str, str] | None = None) -> list[Path]:
    """The project files pulumi could take in `work_dir`'s nearest directory that has any, going up
    the directories as they are and, where pulumi would, as the shell named them (`_as_named`)."""
    found: list[Path] = []
    for start in (work_dir.resolve(), *_as_named(work_dir, os.environ if env is None else env)):
        for directory in (start, *start.parents):
            here = [directory / name for name in PROJECT_FILES if (directory / name).is_file()]
            if here:
                found += [path for path in here if path not in found]
                break
    return found


def _as_named(work_dir: Path, env: Mapping[str, str]) -> list[Path]:
    """pulumi (Go's os.Getwd) takes $PWD for its directory when it names that directory, and goes up
    from it by name: from a link in the repository (`exp -> deep/real/exp`) that is `exp`'s parent,
    whose Pulumi.yaml the resolved path's parents never reach."""
    pwd = env.get("PWD") or ""
    try:
        if os.path.isabs(pwd) and os.path.samefile(pwd, work_dir):
            return [Path(os.path.normpath(pwd))]
    except OSError:
        pass
    return []


def _backend_url(path: Path) -> str | None:
    import yaml   # pulumi's own dependency: present wherever the Automation API is
    from ...regular_files import read_config_file
    try:
        data = yaml.safe_load(read_config_file(path).decode("utf-8", errors="replace"))
    except RecursionError:
        raise ConfigError(f"cannot read {path}: nested too deeply") from None
    except (yaml.YAMLError, ValueError, OSError) as exc:   # ValueError: a date such as 2001-13-01
        raise ConfigError(f"cannot read {path}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from None
    backend = data.get("backend") if isinstance(data, dict) else None
    url = backend.get("url") if isinstance(backend, dict) else None
    if url is not None and not isinstance(url, str):   # aliases can make it a list of 10^9 items: never print it
        raise ConfigError(f"cannot read {path}: its backend url is not a string")
    return url or None


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
    current = logged_in_backend(env)
    for path in project_files(Path(work_dir), env):
        declared = _backend_url(path)
        if declared is None or (current is not None and declared.rstrip("/") == current.rstrip("/")):
            continue
        _refuse(path, declared, current)


def _refuse(path: Path, declared: str, current: str | None) -> None:
    from ...masking import without_url_passwords
    raise ConfigError(f"{path} sets Pulumi backend {without_url_passwords(declared)!r}, "
                      f"which is not the one you are logged in to ({without_url_passwords(current or 'none')}): "
                      "fleet will not present your Pulumi credentials there",
                      hint="`pulumi login` to it yourself if you trust it, set PULUMI_BACKEND_URL, or save "
                           "`pulumi stack output --json` to a file and set FLEET_AWS_OUTPUTS")
