"""A machine's lost connection said why in nothing: paramiko raises EOFError() or SSHException('') with
no text, and a run's error read `machine m: connection lost: ` (fleet/remote/exec.py, exec_group.py).
The message names the exception's type when it has no text, and what the SSH transport itself saw."""
from __future__ import annotations

import threading

import pytest

from fleet.remote import exec as remote_exec
from fleet.remote import exec_group
from fleet.remote.exec import ProcessResult, ProcessSpec, RunningProcess, _Output


class _M:   # a stand-in machine: only the id is read before the channel opens
    id = "m"


class Transport:
    def __init__(self, saved: BaseException | None, active: bool):
        self.saved, self.active = saved, active

    def get_exception(self):
        saved, self.saved = self.saved, None
        return saved

    def is_active(self):
        return self.active


class Session:
    def __init__(self, transport: Transport | None):
        self.client = type("Client", (), {"get_transport": lambda _self: transport})()

    def open_channel(self):
        raise EOFError()

    def close(self):
        pass


def _procs(n: int) -> list[RunningProcess]:
    specs = [ProcessSpec(_M(), f"0.{i}", "", {}, "/", f"/p{i}") for i in range(n)]
    return [RunningProcess(s, threading.Thread(target=lambda: None), ProcessResult(s)) for s in specs]


def _errors(monkeypatch, session, ranks: int) -> list[str]:
    connect = (lambda machine: session) if session is not None else _refused
    monkeypatch.setattr(remote_exec, "connect", connect)
    monkeypatch.setattr(exec_group, "connect", connect)
    procs = _procs(ranks)
    if ranks == 1:
        remote_exec._pump(procs[0], lambda *a: None, None, None)
    else:
        exec_group.pump_group(procs, [_Output(p.spec, lambda *a: None, None, None) for p in procs], None)
    return [p.result.error for p in procs]


def _refused(machine):
    raise EOFError()


@pytest.mark.parametrize("ranks", [1, 2])   # one `agent exec`, or one `agent group` for several ranks
@pytest.mark.parametrize("session, why", [
    (lambda: None, "EOFError"),                                   # connect itself failed
    (lambda: Session(None), "EOFError"),
    (lambda: Session(Transport(None, active=True)), "EOFError"),
    (lambda: Session(Transport(None, active=False)), "EOFError; the SSH transport has closed"),
    (lambda: Session(Transport(ConnectionResetError(104, "Connection reset by peer"), active=False)),
     "EOFError; the SSH transport: [Errno 104] Connection reset by peer"),
    (lambda: Session(Transport(EOFError(), active=False)), "EOFError; the SSH transport: EOFError"),
])
def test_a_connection_lost_without_words_still_says_why(monkeypatch, ranks, session, why):
    errors = _errors(monkeypatch, session(), ranks)
    assert errors == [f"machine m: connection lost: {why}"] * ranks
    assert not any(e.endswith(": ") for e in errors)


def test_an_exception_with_words_keeps_them(monkeypatch):
    class Worded(Session):
        def open_channel(self):
            raise OSError("Socket is closed")
    errors = _errors(monkeypatch, Worded(Transport(None, active=True)), 1)
    assert errors == ["machine m: connection lost: Socket is closed"]
