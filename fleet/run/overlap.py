"""Work that runs beside staging once the machines answer, because the path to the command does not
wait on it: the first heartbeat (then the heartbeat's loop), the lease's rendezvous port, each
machine's checkpoint directory. Run one after the other they cost a round trip or a Python start
each before staging even began (Slurm bench: ~0.2 s of a ~1.2 s start to first line).

Every piece still finishes before setup and the command: `Beside` joins them when its block ends,
also when the block raised, so nothing started here outlives the stage it belongs to (release
never races a first beat), and the first error of a piece is raised there.
"""
from __future__ import annotations

import threading
from typing import Callable


class Beside:
    """`with Beside() as beside: beside.run(fn) …` — each fn on its own thread, all joined at the end."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def run(self, fn: Callable[[], object], name: str) -> None:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 — raised in the caller's thread by __exit__
                self._errors.append(exc)

        thread = threading.Thread(target=body, name=f"fleet-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def __enter__(self) -> "Beside":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for thread in self._threads:
            thread.join()
        if exc is None and self._errors:
            raise self._errors[0]
