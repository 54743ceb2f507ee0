"""Staging a run that goes on in a worker thread after the main thread ended (a library caller's
script, under load): the chunk read-ahead pool refuses work once the interpreter shuts down, and
the sync died with "cannot schedule new futures after interpreter shutdown" (a loaded suite run).
The reads then go on plain threads (as many at once as the pool's workers), in order."""
from __future__ import annotations

import concurrent.futures.thread as executor_thread

from fleet.snapshots import sync


class Store:
    parallel = 4

    def chunk_path(self, h):
        return f"/store/{h}"

    def get_chunk(self, h):
        return f"bytes of {h}".encode()


def test_chunks_are_read_in_order_once_the_pool_takes_no_more_work(monkeypatch):
    monkeypatch.setattr(executor_thread, "_shutdown", True)   # what interpreter shutdown sets
    order = [(f"h{i}", f"file{i}", "snap") for i in range(40)]
    assert list(sync._chunks(Store(), order)) == [f"bytes of h{i}".encode() for i in range(40)]
