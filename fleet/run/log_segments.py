"""A detached run's rank logs, shipped into the shared state as they arrive, and read back.

A detached run's supervisor may run on a computer nobody else can read files on (another laptop,
node 0 of the lease). Its rank logs are files in its own `runs/<run>/logs/`, which `fleet logs -f`
on another computer cannot open. So the supervisor also appends every line to the state the team
shares (`log_segments`, migration 0007): per rank, ordered segments of at most SEGMENT_BYTES,
written about once a second, at most RUN_CAP_BYTES per run (beyond that one line says where the
rest is). `fleet logs RUN -f` and `fleet attach RUN` read those rows for a detached run, wherever
they run.

One writer per run (the supervisor, one thread): rows of a run get increasing ids in the order
they were committed, so a reader pages on `id` without missing one.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

SEGMENT_BYTES = 64 * 1024        # one row: bounded, so a chatty rank never writes one huge value
FLUSH_S = 1.0                    # how late a line may reach another computer's `fleet logs -f`
RUN_CAP_BYTES = 64 * 1024 * 1024   # per run in the state: the files on the supervisor keep the rest
READ_ROWS = 500                  # rows per read while following

Sink = Callable[[str, str, str], None]


class LogShipper:
    """Buffers lines per rank label and appends them as segments from one background thread."""

    def __init__(self, state, run_id: str, *, flush_s: float = FLUSH_S, segment_bytes: int = SEGMENT_BYTES,
                 cap_bytes: int = RUN_CAP_BYTES, warn: Callable[[str], None] | None = None):
        self.state, self.run_id = state, run_id
        self.flush_s, self.segment_bytes, self.cap_bytes = flush_s, segment_bytes, cap_bytes
        self._warn = warn
        self._lock = threading.Lock()
        self._pending: dict[str, list[str]] = {}
        self._seq: dict[str, int] = {}
        self._shipped = 0
        self._capped: set[str] = set()
        self._failed = False
        self._stop = threading.Event()
        self._seq.update(_next_seqs(state, run_id))   # setup, then run: the same run's labels go on
        self._thread = threading.Thread(target=self._loop, name=f"fleet-logs-{run_id}", daemon=True)
        self._thread.start()

    def sink(self, downstream: Sink) -> Sink:
        """The execute loop's line sink: every line goes on to `downstream` and into a segment."""
        def both(label: str, stream: str, line: str) -> None:
            self.add(label, stream, line)
            downstream(label, stream, line)
        return both

    def add(self, label: str, stream: str, line: str) -> None:
        # PostgreSQL text cannot hold NUL: one would fail the whole batch, every rank's lines with it.
        line = line.replace("\x00", "\ufffd")
        text = f"{line}\n" if stream == "out" else f"[stderr] {line}\n"   # as the rank's log file has it
        with self._lock:
            self._pending.setdefault(label, []).append(text)

    def close(self) -> None:
        """Ship what is buffered and stop: called when the processes have ended."""
        self._stop.set()
        self._thread.join(timeout=60)
        self._flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        rows = []
        for label, lines in pending.items():
            for data in self._segments(label, lines):
                seq = self._seq.get(label, 0)
                self._seq[label] = seq + 1
                rows.append((label, seq, data))
        if not rows:
            return
        try:
            from ..models import to_jsonable, utcnow
            now = to_jsonable(utcnow())
            self.state.db.executemany(
                "INSERT INTO log_segments (run_id, label, seq, created_at, data) VALUES (?, ?, ?, ?, ?)",
                [(self.run_id, label, seq, now, data) for label, seq, data in rows])
        except Exception as exc:  # noqa: BLE001 — the run goes on; its log files still have every line
            if not self._failed and self._warn is not None:
                self._warn(f"rank logs of run {self.run_id} could not be shipped to the state: {exc}; "
                           "they are still in the supervisor's runs/ directory")
            self._failed = True

    def _segments(self, label: str, lines: list[str]) -> Iterator[str]:
        """`lines` cut into pieces of at most segment_bytes (UTF-8), within the run's cap."""
        if label in self._capped:
            return
        piece: list[str] = []
        size = 0
        for line in lines:
            encoded = len(line.encode())
            if self._shipped + encoded > self.cap_bytes:
                self._capped.add(label)
                if piece:
                    yield "".join(piece)
                yield (f"[fleet] log shipping of this rank stopped: run {self.run_id} has "
                       f"{self.cap_bytes // (1024 * 1024)} MiB of logs in the state; the rest is in "
                       f"runs/{self.run_id}/logs on the supervisor's computer\n")
                return
            while encoded > self.segment_bytes:   # one very long line: split across segments
                if piece:
                    yield "".join(piece)
                    piece, size = [], 0
                head = line.encode()[:self.segment_bytes].decode(errors="ignore")
                yield head
                self._shipped += len(head.encode())
                line = line[len(head):]
                encoded = len(line.encode())
            if size + encoded > self.segment_bytes and piece:
                yield "".join(piece)
                piece, size = [], 0
            piece.append(line)
            size += encoded
            self._shipped += encoded
        if piece:
            yield "".join(piece)


def _next_seqs(state, run_id: str) -> dict[str, int]:
    try:
        rows = state.db.execute("SELECT label, MAX(seq) AS seq FROM log_segments WHERE run_id = ? GROUP BY label",
                                (run_id,))
    except Exception:  # noqa: BLE001 — a state without the table: the writes then warn once
        return {}
    return {r["label"]: int(r["seq"]) + 1 for r in rows}


def read_segments(state, run_id: str, after_id: int = 0, limit: int = READ_ROWS) -> list[dict[str, Any]]:
    """Rows of one run after `after_id`, in the order they were written."""
    return state.db.execute("SELECT id, label, seq, data FROM log_segments WHERE run_id = ? AND id > ? "
                            "ORDER BY id LIMIT ?", (run_id, int(after_id), int(limit)))


class SegmentReader:
    """`[label] line` for every complete line in a run's segments, page by page; a line split over
    segments (a very long one) is put back together."""

    def __init__(self, state, run_id: str):
        self.state, self.run_id = state, run_id
        self.after = 0
        self._partial: dict[str, str] = {}

    def lines(self) -> Iterator[str]:
        from ..render.text import last_redraw
        while True:
            rows = read_segments(self.state, self.run_id, self.after)
            for row in rows:
                self.after = max(self.after, int(row["id"]))
                text = self._partial.pop(row["label"], "") + row["data"]
                complete, _, rest = text.rpartition("\n")
                if rest:
                    self._partial[row["label"]] = rest
                if complete or text.endswith("\n"):
                    for line in complete.split("\n") if complete else [""]:
                        yield f"[{row['label']}] {last_redraw(line)}"
            if len(rows) < READ_ROWS:
                return

    def has_any(self) -> bool:
        return bool(read_segments(self.state, self.run_id, 0, 1))
