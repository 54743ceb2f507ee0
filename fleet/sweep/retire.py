"""Why a machine of the warm pool runs no more trials, as the reset after a trial finds it.

Each check in `_found` reads one machine's reset and gives a reason or none; a machine keeps the
first reason each check gives, warned once. A slot any of whose machines has a reason runs no more
trials, and names the reason of the earliest check (on the first of its machines with one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .reset import ResetResult
from .trial_env import TrialEnvironments


@dataclass(frozen=True)
class Retired:
    after: str       # the trial whose reset found it
    warn: str        # said once, when found
    lost: str        # the slot's reason, after "machines A+B "
    refused: str     # the error of the trial the slot then refuses, after "machines A+B"


def _differs(known: str | None, read: str | None) -> bool:
    """A state the reset read that differs from the one after setup (unread is not changed)."""
    return None not in (known, read) and known != read


def _found(env: TrialEnvironments, got: ResetResult, run_id: str) -> list[Retired | None]:
    """Each check's reason, if this reset found it; a slot names the earliest."""
    m = got.machine_id
    return [
        Retired(run_id, f"machine {m}: {run_id} changed fleet's own programs there: no more trials on it "
                                "(the reset after it ran none of them, so nothing it left was ended)",
                        f"had fleet's own programs changed by {run_id}",
                        f": fleet's own programs there were changed by {run_id}")
        if got.agent_changed else None,
        Retired(run_id, f"machine {m}: {run_id} changed the staged code or data there: no more trials "
                                "on it (their records pin them as staged)",
                        f"had their staged code or data changed by {run_id}",
                        f": the staged code or data was changed by {run_id}")
        if _differs(env.code.get(m), got.code_state) else None,
        # Not probed again: the probe trusts RECORD's hashes, so a library patched in place would
        # run in later trials whose records show the pool's environment.
        Retired(run_id, f"machine {m}: {run_id} changed files in the venv's site-packages there: no more "
                                "trials on it (their records would show the pool's environment)",
                        f"had their venv's site-packages changed by {run_id}",
                        f": the venv's site-packages were changed by {run_id}")
        if _differs(env.site.get(m), got.site_state) else None,
        Retired(run_id, f"machine {m}: after {run_id} {got.low_space}: no more trials on it",
                         f"are short of disk space (after {run_id} {got.low_space})",
                         f" are short of disk space: after {run_id} {got.low_space}")
        if got.low_space else None,
    ]


class Retirements:
    """Per machine: the check (its index in `_found`) -> why the machine runs no more trials."""

    def __init__(self) -> None:
        self.by_machine: dict[str, dict[int, Retired]] = {}

    def found(self, env: TrialEnvironments, got: ResetResult, run_id: str) -> list[str]:
        """Keep what the reset after `run_id` found on its machine; the warnings to say (the new ones)."""
        seen = self.by_machine.setdefault(got.machine_id, {})
        # setdefault: a reset of another slot sharing the machine may find the same at once; one warns
        return [why.warn for check, why in enumerate(_found(env, got, run_id))
                if why is not None and seen.setdefault(check, why) is why]

    def of(self, machine_ids: Iterable[str]) -> Retired | None:
        """Why these machines (a slot's) run no more trials, or None while they may."""
        found = [(check, why) for m in machine_ids for check, why in self.by_machine.get(m, {}).items()]
        return min(found, key=lambda f: f[0])[1] if found else None
