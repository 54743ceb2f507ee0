"""Interruption notices while the command runs: for each machine whose provider says where it
reads its notices (InterruptionNotices), fleet/remote/notice_watch.py runs on that machine over
one SSH channel. When it reports a spot reclaim, the run stops at once (SIGTERM: the experiment
writes its checkpoint, which is uploaded while the machine still exists, in the notice's two
minutes) and ends as a loss of machines, which recovery (fleet/run/recovery.py) resumes on new
ones where `recovery` allows it.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from ..models import Lease, Machine, parse_time
from ..providers.capabilities import Interruption, InterruptionNotices
from .context import RunContext


def _source() -> str:
    return (Path(__file__).resolve().parent.parent / "remote" / "notice_watch.py").read_text()


class NoticeWatch:
    def __init__(self, ctx: RunContext, lease: Lease, provider: Any):
        self.ctx, self.lease, self.provider = ctx, lease, provider
        self.notices: list[Interruption] = []
        self._channels: list[Any] = []
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> "NoticeWatch":
        if not isinstance(self.provider, InterruptionNotices):
            return self
        for m in self.lease.machines:
            url = self.provider.notice_url(m)
            if url:
                threading.Thread(target=self._watch, args=(m, url), name=f"notices-{m.id}", daemon=True).start()
        return self

    def _watch(self, machine: Machine, url: str) -> None:
        from ..remote.ssh import connect, shell_command
        try:
            session = connect(machine, timeout=30)
            chan = session.open_channel()
            with self._lock:
                self._sessions.append(session)
                if self._stopped.is_set():
                    chan.close()
                    return
                self._channels.append(chan)
            chan.exec_command(shell_command([machine.python, "-I", "-S", "-c", _source(), url]))
            for raw in chan.makefile("rb"):
                event = json.loads(raw)
                if "notice" in event:
                    self._interrupted(machine, event)
                    return
                if "rebalance" in event:
                    self.ctx.events.warn(f"machine {machine.id} (node {machine.node_rank}): AWS recommends "
                                         "rebalancing (its spot capacity is at risk); the run goes on")
        except Exception:  # noqa: BLE001 — a watch that ends (machine gone, run over) ends quietly
            return

    def _interrupted(self, machine: Machine, event: dict[str, Any]) -> None:
        when = event.get("time") or ""
        try:
            at = parse_time(when) if when else None
        except ValueError:
            at = None
        self.notices.append(Interruption(machine.id, at, f"spot {event.get('action') or 'interruption'}"))
        self.ctx.request_stop("lost", f"spot interruption notice for machine {machine.id} (node {machine.node_rank}, "
                                      f"{machine.address}): it goes at {when or 'any moment'}")

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            for closable in [*self._channels, *self._sessions]:
                try:
                    closable.close()
                except Exception:  # noqa: BLE001
                    pass
