"""Environment for a run beyond fleet.toml's [env]: `--env KEY=VALUE` and `--env-file FILE`.

Precedence, lowest first: [env] in fleet.toml, then each --env-file in order, then each --env. The
values are the run's like [env]'s: recorded with the run (secret-named ones redacted), so a secret
belongs in `secrets`, which passes it from the shell and never records it.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from .model import Config
from .schema import _ENV_NAME_RE

_NAME = re.compile(_ENV_NAME_RE)
MAX_ENV_FILE_BYTES = 1024 ** 2


def parse_assignment(text: str, *, where: str = "--env") -> tuple[str, str]:
    """`KEY=VALUE` → (KEY, VALUE); the value may be empty and may contain '='."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep:
        # Quoted only when it is a bare name (`--env LR`): anything else may be a piece of a secret
        # (a PEM body in a dotenv file, a token given without its name).
        if where == "--env":
            shown = repr(text) if _NAME.fullmatch(text.strip()) else "the value"
        else:
            shown = "the line"
        raise UsageError(f"{where}: {shown} is not KEY=VALUE", hint="e.g. --env LR=3e-4")
    if not _NAME.fullmatch(name):
        shown = repr(name) if where == "--env" else "the name"
        raise UsageError(f"{where}: {shown} is not an environment variable name (letters, digits, _; "
                         "not starting with a digit)")
    if "\0" in value:
        raise UsageError(f"{where}: the value of {name} contains a NUL character")
    return name, value


def read_env_file(path: Path) -> dict[str, str]:
    """A dotenv file: `KEY=VALUE` per line, `#` comments and blank lines ignored, an optional
    `export ` prefix, and values optionally in matching single or double quotes (taken literally:
    no interpolation). Errors name the file and line."""
    try:
        # Read through a bound: `--env-file <(pass show x)` is a pipe, so no size to check first,
        # and --env-file /dev/zero read whole took every byte of memory until the kernel killed fleet.
        with open(path, "rb") as handle:
            data = handle.read(MAX_ENV_FILE_BYTES + 1)
        if len(data) > MAX_ENV_FILE_BYTES:
            raise UsageError(f"--env-file {path}: larger than {MAX_ENV_FILE_BYTES // 1024 ** 2} MiB; not a dotenv file")
        lines = data.decode("utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"--env-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--env-file {path}: cannot read it ({exc})") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, value = parse_assignment(line, where=f"{path}:{number}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name] = value
    return out


def env_overrides(assignments: list[str] = (), files: list[Path] = ()) -> dict[str, str] | None:
    """--env-file then --env, as `load_config`'s `env` override (plain data: a detached run's
    supervisor loads the config again from the same overrides). None when neither was given."""
    if not assignments and not files:
        return None
    env: dict[str, str] = {}
    for path in files:
        env.update(read_env_file(path))
    for text in assignments:
        name, value = parse_assignment(text)
        env[name] = value
    return env


def with_env(config: Config, assignments: list[str] = (), files: list[Path] = ()) -> Config:
    """`config` with --env-file and --env on top of its [env] (for a Config built in code)."""
    extra = env_overrides(assignments, files)
    return config if extra is None else replace(config, env={**config.env, **extra})
