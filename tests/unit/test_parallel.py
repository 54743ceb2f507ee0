"""fleet.parallel: N machines at once, also once the interpreter is shutting down."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fleet.parallel import parallel


def refusing_after(n: int):
    """ThreadPoolExecutor.submit as it is once the main thread has ended: refused (after n taken)."""
    real = ThreadPoolExecutor.submit
    taken = [0]

    def submit(self, fn, *args, **kwargs):
        if taken[0] >= n:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        taken[0] += 1
        return real(self, fn, *args, **kwargs)
    return submit


@pytest.mark.parametrize("taken", [0, 2])
def test_work_an_executor_refuses_at_shutdown_runs_on_plain_threads_in_order(monkeypatch, taken):
    """Red-team finding: a run in a worker thread when the main thread ended could not collect or
    release: `cannot schedule new futures after interpreter shutdown`, the lease left up."""
    monkeypatch.setattr(ThreadPoolExecutor, "submit", refusing_after(taken))
    threads: set[str] = set()

    def square(n: int) -> int:
        threads.add(threading.current_thread().name)
        return n * n
    assert parallel(list(range(7)), square, max_workers=3) == [n * n for n in range(7)]
    assert any(name == "fleet-parallel" for name in threads)


def test_the_first_error_is_raised_after_every_item_ran_also_on_plain_threads(monkeypatch):
    monkeypatch.setattr(ThreadPoolExecutor, "submit", refusing_after(0))
    ran = []

    def one(n: int) -> int:
        ran.append(n)
        if n in (1, 3):
            raise ValueError(f"item {n}")
        return n
    with pytest.raises(ValueError, match="item 1"):
        parallel([0, 1, 2, 3, 4], one)
    assert sorted(ran) == [0, 1, 2, 3, 4]


def test_submit_or_thread_gives_a_future_on_plain_threads_bounded_by_the_pool(monkeypatch):
    """Futures consumed one by one (as_completed, a window): a refused submit still yields a Future,
    run on a plain thread, no more at once than the pool's workers; one cancelled before its turn
    never runs."""
    from concurrent.futures import as_completed

    from fleet.parallel import submit_or_thread
    monkeypatch.setattr(ThreadPoolExecutor, "submit", refusing_after(0))
    running, most, lock, go = [0], [0], threading.Lock(), threading.Event()
    ran = []

    def work(n: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        go.wait(10)
        with lock:
            running[0] -= 1
            ran.append(n)
        if n == 3:
            raise ValueError("item 3")
        return n
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [submit_or_thread(pool, work, n) for n in range(6)]
        while running[0] < 2:
            time.sleep(0.01)
        waiting = [n for n, f in enumerate(futures) if not f.running() and n != 3]
        assert futures[waiting[-1]].cancel()
        go.set()
        done = {n: f.exception() or f.result() for n, f in enumerate(futures) if not f.cancelled()}
        assert set(as_completed(futures)) == set(futures)
    assert most[0] == 2
    assert sorted(ran) == sorted(done) == sorted(set(range(6)) - {waiting[-1]})
    assert isinstance(done.pop(3), ValueError) and all(n == got for n, got in done.items())
