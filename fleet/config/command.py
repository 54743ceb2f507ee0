"""The one rule for a command given as words (`fleet up -- …`, `fleet run LEASE -- …`, `fleet ssh
LEASE N -- …`, `fleet sweep -- …`): a single word is a shell command line, run as written
(`fleet up -- 'echo A; echo B'`); several words are argv, each quoted for the shell
(`fleet up -- python train.py --lr 3e-4`). `command` in fleet.toml is always a shell command line."""
from __future__ import annotations

from typing import Any, Sequence


def command_line(words: Sequence[str]) -> str:
    """The shell command line the machines run for these words."""
    if len(words) == 1:
        return words[0]
    import shlex
    return shlex.join(words)


# Linux takes at most 128 KiB as one argument (MAX_ARG_STRLEN), and the command travels to each
# machine as one, wrapped: a longer one was leased for, then failed there ("Argument list too long"),
# or, past sshd's 256 KiB, read as a lost connection to run again.
MAX_COMMAND_BYTES = 100 * 1024


TOO_LONG_HINT = "put it in a script in the experiment directory and run that"


def too_long(value: Any) -> str | None:
    """Why a command (or setup) is longer than a machine can be given, or None when it is not."""
    size = len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0
    if size <= MAX_COMMAND_BYTES:
        return None
    return f"{size:,} bytes, more than a machine takes as one command (at most {MAX_COMMAND_BYTES // 1024} KiB)"


def check_length(fields: dict[str, Any], shown: str) -> None:
    """A ConfigError for a command (or setup) longer than a machine can be given."""
    from ..errors import ConfigError
    for key in ("command", "setup"):
        why = too_long(fields.get(key))
        if why is not None:
            raise ConfigError(why, path=shown or None, key=key, hint=TOO_LONG_HINT)
