"""fleet.remote.exec: a line sink that raises is the caller's problem, not a lost connection."""
from __future__ import annotations

import threading

from fleet.remote.exec import ProcessResult, ProcessSpec, RunningProcess, _Output


class Stop(BaseException):   # as a KeyboardInterrupt would be, without interrupting the test session
    pass


class _M:   # a stand-in machine: only the label and id are read
    id = "m"


def test_a_sink_that_raises_gets_no_more_lines_and_the_log_file_gets_every_line(tmp_path):
    """Red-team finding: Events.log() raising ended the process's output pump, and the run was
    recorded as lost machines ("connection lost: user boom")."""
    spec = ProcessSpec(_M(), "0", "", {}, "/", "/p")
    RunningProcess(spec, threading.Thread(target=lambda: None), ProcessResult(spec))
    seen, error = [], Stop()

    def sink(label, stream, text):
        seen.append(text)
        raise error
    log = tmp_path / "rank-0.log"
    output = _Output(spec, sink, log, None)
    output.feed("out", b"one\ntwo\n")
    output.feed("err", b"three", final=True)
    output.close()
    assert seen == ["one"] and output.sink_error is error
    assert log.read_text() == "one\ntwo\n[stderr] three\n"
