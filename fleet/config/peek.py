"""Read one top-level key of ./fleet.toml without validating the rest.

Commands like `fleet status` need the team's database and the configured user even where the
file is incomplete for `fleet up`; a broken file is left for the commands that load it properly.
"""
from __future__ import annotations

from pathlib import Path
TYPE_CHECKING = False   # see fleet/__init__.py: on the path of every `fleet status`
if TYPE_CHECKING:
    from typing import Any


def peek(key: str, directory: Path | None = None) -> Any:
    return peek_why(key, directory)[0]


def peek_why(key: str, directory: Path | None = None) -> tuple[Any, str | None]:
    """(the key's value or None, why ./fleet.toml could not be read when it is there but unreadable
    or not TOML; None when it read, or when there is no fleet.toml)."""
    from ..regular_files import read_config_file
    path = (directory or Path.cwd()) / "fleet.toml"
    try:
        data = read_config_file(path)
        import tomllib   # only once there is a file: tomllib imports typing (~10 ms)
        return tomllib.loads(data.decode()).get(key), None
    except OSError as exc:
        return None, _why_unread(path, exc)
    except (ValueError, ImportError, RecursionError) as exc:
        return None, f"not valid TOML ({str(exc).splitlines()[0][:200] if str(exc) else 'nested too deeply'})"


def _why_unread(path: Path, exc: OSError) -> str | None:
    """Why a fleet.toml that could not be opened is there but unreadable; None when there is none. A
    dangling link (an unmounted team share) or a loop is said as `fleet up` says it, never "none"."""
    import os
    if not os.path.islink(path):
        return None if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
    from .locate import why_not_a_file
    return why_not_a_file(path)


def peek_str(key: str, directory: Path | None = None) -> str:
    value = peek(key, directory)
    return value if isinstance(value, str) else ""


def store_url(directory: Path | None = None) -> str | None:
    """./fleet.toml's `store`, for the snapshot commands: unlike peek, a file that is there but does
    not parse (or a `store` that is not a string) is refused, never read as "no store configured":
    `snapshot rm` or `gc` would otherwise act on the default store instead of the one configured."""
    from ..regular_files import read_config_file
    path = (directory or Path.cwd()) / "fleet.toml"
    try:
        data = read_config_file(path)
    except OSError as exc:
        why = _why_unread(path, exc)
        if why is None:
            return None
        from ..errors import ConfigError
        raise ConfigError(f"{path}: {why}", hint="pass --store to choose the store") from None
    import tomllib
    from ..errors import ConfigError
    try:
        value = tomllib.loads(data.decode()).get("store")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc or 'nested too deeply'}), so its `store` is unknown",
                          hint="fix it, or pass --store to choose the store") from None
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: store must be a string (a path or s3://bucket/prefix), got {value!r}")
    return value or None
