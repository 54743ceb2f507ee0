"""fleet.parallel: N machines at once, also once the interpreter is shutting down."""
from __future__ import annotations

import threading
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
