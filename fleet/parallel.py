"""A bounded thread pool over a list: leasing, staging, extending on N machines at once.

Once the interpreter is shutting down (the main thread has ended while a run goes on in another
thread) a ThreadPoolExecutor takes no more work; collecting and releasing must still happen, so
the work then goes on plain threads, or in the calling thread when none can be started.
"""
from __future__ import annotations

import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel(items: list[T], fn: Callable[[T], R], max_workers: int = 16) -> list[R]:
    """Run fn over items in a bounded pool; results in order; raise the first error after all finished."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        futures = [submit_or_thread(pool, fn, item) for item in items]
        wait(futures)      # the pool's exit waits for its own workers only, not for refused work's threads
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return [f.result() for f in futures]


# Per pool, how many of the works it refused run at once: the pool's own bound (a bounded SSH fan-out
# stays bounded at shutdown too).
_gates: "weakref.WeakKeyDictionary[ThreadPoolExecutor, threading.Semaphore]" = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()


def _gate(pool: ThreadPoolExecutor) -> threading.Semaphore:
    with _gates_lock:
        gate = _gates.get(pool)
        if gate is None:
            gate = _gates[pool] = threading.Semaphore(max(1, getattr(pool, "_max_workers", 1)))
        return gate


def submit_or_thread(pool: ThreadPoolExecutor, fn: Callable[..., R], *args) -> "Future[R]":
    """`pool.submit(fn, *args)`, or, once the interpreter is shutting down and the pool takes no more
    work, the same work on a plain thread (as many at once as the pool has workers; here, when no
    thread starts either). A Future either way: `as_completed` and `cancel` (before it starts) work."""
    try:
        return pool.submit(fn, *args)
    except RuntimeError:   # "cannot schedule new futures after interpreter shutdown"
        pass
    future: Future[R] = Future()
    gate = _gate(pool)

    def run(gated: bool) -> None:
        if gated:
            gate.acquire()
        try:
            if not future.set_running_or_notify_cancel():   # cancelled while it waited its turn
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 — the Future's owner raises it from result()
                future.set_exception(exc)
        finally:
            if gated:
                gate.release()
    thread = threading.Thread(target=run, args=(True,), name="fleet-parallel", daemon=True)
    try:
        thread.start()
    except RuntimeError:   # no new thread either: in this one
        run(False)
    return future
