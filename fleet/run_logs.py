"""A run's rank logs as `fleet logs` and `fleet attach` read them: the run's own log files, or,
for a detached run, the segments its supervisor ships into the shared state (fleet/run/log_segments.py),
followed into the next attempt when the run resumed on new machines."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

from .errors import NotFound

GONE_CHECK_S = 2.0   # how often a follower asks whether a detached run's supervisor still lives


def log_files(run: dict[str, Any]) -> list[Path]:
    log_dir = Path(run.get("log_path") or "")
    if not log_dir.is_dir():
        return []
    return sorted(log_dir.glob("rank-*.log"), key=lambda p: _rank_key(p.stem[5:]))


READ_PIECE = 1 << 20    # bytes read at a time: a log of gigabytes is printed as it is read, not after
LINE_MAX = 1 << 20      # a longer line (a progress bar with no newline) is shown in pieces of this size


def _new_lines(path: Path, offset: int) -> Iterator[tuple[bytes, int]]:
    """Each complete line of a log file from offset on, with the offset just past it (a line still
    being written is left for the next pass); nothing for anything but a regular file (the run row
    names the directory, and a FIFO or device planted there would hang or flood `fleet logs`).
    Memory stays within READ_PIECE + LINE_MAX whatever the file holds."""
    import os
    from .regular_files import open_regular
    try:
        fd = open_regular(path)
    except OSError:
        return
    with os.fdopen(fd, "rb") as fh:
        fh.seek(offset)
        pending = b""
        while data := fh.read(READ_PIECE):
            pending += data
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                offset += end + 1 - start
                yield pending[start:end], offset
                start = end + 1
            pending = pending[start:]
            while len(pending) >= LINE_MAX:
                piece, pending = pending[:LINE_MAX], pending[LINE_MAX:]
                offset += len(piece)
                yield piece, offset


def _rank_key(label: str) -> tuple[int, ...]:
    """Setup logs first, then ranks in numeric order ("setup:1" < "0" < "2" < "10" < "1.3")."""
    setup = label.startswith("setup:")
    parts = label.removeprefix("setup:").split(".")
    return (0 if setup else 1, *(int(p) if p.isdigit() else 1 << 30 for p in parts))


def follow_logs(run_id: str, *, follow: bool = False, state=None, poll_s: float = 0.3) -> Iterator[str]:
    """Yield `[rank] line` for every log line of a run; with follow, keep going until it ends. A
    wrong argument or an unknown run is raised by this call, not at the first line read."""
    from .arguments import flag_arg, name_arg, state_arg
    run_id, follow = name_arg("run_id", run_id), flag_arg("follow", follow)
    opened = state is None
    state = state_arg(state)
    try:
        run = state.get_run(run_id)
    except BaseException:
        if opened:
            state.close()
        raise
    return _lines(state, run, follow, poll_s, opened)


def _lines(state, run: dict[str, Any], follow: bool, poll_s: float, opened: bool) -> Iterator[str]:
    try:    # the state opened for this reader is closed with it (also when the caller stops early)
        yield from _follow(state, run, follow, poll_s)
    finally:
        if opened:
            state.close()


def _follow(state, run: dict[str, Any], follow: bool, poll_s: float) -> Iterator[str]:
    offsets: dict[Path, int] = {}
    followed = follow
    segments = _segment_reader(state, run)
    checked = time.monotonic()
    while True:
        if segments is not None:   # a detached run: its supervisor ships the lines into the state
            yield from segments.lines()
        for path in log_files(run) if segments is None else ():
            label = path.stem[5:]
            for raw, offsets[path] in _new_lines(path, offsets.get(path, 0)):
                for line in raw.decode(errors="replace").splitlines() or [""]:
                    yield f"[{label}] {line}"
        if not follow or state.get_run(run["id"])["status"] != "running":
            if follow:
                follow = False
                continue   # one more pass for lines written just before the end
            following = run
            run, why = _next_attempt(state, run) if followed else (None, None)
            if run is None:
                if why:
                    yield why
                return
            yield f"[fleet] run {following['id']} lost its machines; following its next attempt, run {run['id']}"
            offsets, follow, segments = {}, True, _segment_reader(state, run)
            continue
        if segments is not None and time.monotonic() - checked >= GONE_CHECK_S:
            checked = time.monotonic()
            gone = _unsupervised(state, run)
            if gone:   # nothing will end this run: say so, rather than follow it for ever
                yield from segments.lines()
                yield gone
                return
        time.sleep(poll_s)


def _unsupervised(state, run: dict[str, Any]) -> str | None:
    """The last line of a detached run whose supervisor is gone (fleet/run/supervisor_beat.py)."""
    from .run.supervisor_beat import supervisor_gone
    reason = supervisor_gone(state, state.get_run(run["id"]))
    if reason is None:
        return None
    return (f"[fleet] run {run['id']} is no longer supervised: {reason}; its machines end at their deadline, "
            f"`fleet down {run.get('lease_id') or 'LEASE'}` (or `fleet reap`) releases them now and records the run "
            f"as lost, then `fleet up --resume {run['id']}` continues from its checkpoints")


def _segment_reader(state, run: dict[str, Any]):
    """Where a detached run's lines are read: the state (fleet/run/log_segments.py), so any
    computer sharing it follows every rank. None: the run's own log files (an attached run, or a
    finished detached one that shipped nothing, from before segments existed)."""
    if not (run.get("meta") or {}).get("detached"):
        return None
    from .run.log_segments import SegmentReader
    reader = SegmentReader(state, run["id"])
    if run.get("status") != "running" and not reader.has_any() and log_files(run):
        return None
    return reader


def _next_attempt(state, run: dict[str, Any], answer_s: float = 30.0,
                  start_s: float = 300.0) -> tuple[dict[str, Any] | None, str | None]:
    """The attempt that resumes `run` on new machines, once its row exists; None when there is none
    (with the last line to show, when its supervisor died before starting it).
    A run that lost its machines is answered by fleet/run/recovery.py right after it ended
    (`next_attempt`: the next run id, or null); the next attempt's row follows once it is planned,
    pinned and granted its budget (a refused budget turns the answer into null)."""
    answer_by, start_by, checked = time.monotonic() + answer_s, None, time.monotonic()
    while True:
        row = state.get_run(run["id"])
        meta = row.get("meta") or {}
        if "next_attempt" in meta:
            if not meta["next_attempt"]:
                return None, None
            try:
                return state.get_run(meta["next_attempt"]), None
            except NotFound:
                start_by = start_by or time.monotonic() + start_s
                if time.monotonic() > start_by:
                    return None, None
            if time.monotonic() - checked >= GONE_CHECK_S:   # named, but nothing may ever start it
                checked = time.monotonic()
                from .run.supervisor_beat import supervisor_silent
                reason = supervisor_silent(state, row)
                if reason:
                    return None, (f"[fleet] run {run['id']} named its next attempt, {meta['next_attempt']}, but "
                                  f"{reason}, so nothing will start it (`fleet up --resume {run['id']}` continues "
                                  "from its checkpoints)")
        elif not isinstance(meta.get("summary"), dict) or not meta["summary"].get("machines_lost") \
                or time.monotonic() > answer_by:
            return None, None
        time.sleep(0.5)
