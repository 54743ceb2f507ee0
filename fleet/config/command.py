"""The one rule for a command given as words (`fleet up -- …`, `fleet run LEASE -- …`, `fleet ssh
LEASE N -- …`, `fleet sweep -- …`): a single word is a shell command line, run as written
(`fleet up -- 'echo A; echo B'`); several words are argv, each quoted for the shell
(`fleet up -- python train.py --lr 3e-4`). `command` in fleet.toml is always a shell command line."""
from __future__ import annotations

from typing import Sequence


def command_line(words: Sequence[str]) -> str:
    """The shell command line the machines run for these words."""
    if len(words) == 1:
        return words[0]
    import shlex
    return shlex.join(words)
