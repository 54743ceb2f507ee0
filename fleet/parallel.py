"""A bounded thread pool over a list: leasing, staging, extending on N machines at once.

Once the interpreter is shutting down (the main thread has ended while a run goes on in another
thread) a ThreadPoolExecutor takes no more work; collecting and releasing must still happen, so
the work then goes on plain threads, or in the calling thread when none can be started.
"""
from __future__ import annotations

import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel(items: list[T], fn: Callable[[T], R], max_workers: int = 16) -> list[R]:
    """Run fn over items in a bounded pool; results in order; raise the first error after all finished."""
    if not items:
        return []
    workers = min(max_workers, len(items))
    outcomes: list[tuple[bool, object]] = []    # (ok, result or exception) per item, in order
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for item in items:
            try:
                futures.append(pool.submit(fn, item))
            except RuntimeError:   # "cannot schedule new futures after interpreter shutdown"
                break
        for fut in futures:
            try:
                outcomes.append((True, fut.result()))
            except BaseException as exc:  # noqa: BLE001
                outcomes.append((False, exc))
    outcomes += _on_threads(items[len(outcomes):], fn, workers)
    errors = [value for ok, value in outcomes if not ok]
    if errors:
        raise errors[0]
    return [value for _, value in outcomes]   # type: ignore[misc]


def _on_threads(items: list[T], fn: Callable[[T], R], workers: int) -> list[tuple[bool, object]]:
    """What the executor refused: on `workers` plain threads at a time, or here when none starts."""
    outcomes: list[tuple[bool, object]] = [(True, None)] * len(items)

    def one(i: int) -> None:
        try:
            outcomes[i] = (True, fn(items[i]))
        except BaseException as exc:  # noqa: BLE001 — raised by the caller, after every item had its turn
            outcomes[i] = (False, exc)

    for start in range(0, len(items), workers):
        batch = []
        for i in range(start, min(start + workers, len(items))):
            thread = threading.Thread(target=one, args=(i,), name="fleet-parallel", daemon=True)
            try:
                thread.start()
            except RuntimeError:   # no new thread either: in this one
                one(i)
                continue
            batch.append(thread)
        for thread in batch:
            thread.join()
    return outcomes


class Deferred:
    """Work a pool refused at interpreter shutdown, done in the caller's thread when its result is wanted."""

    def __init__(self, fn: Callable[..., R], args: tuple):
        self.fn, self.args = fn, args

    def result(self) -> R:
        return self.fn(*self.args)

    def cancel(self) -> bool:
        return True


def submit_or_defer(pool: ThreadPoolExecutor, fn: Callable[..., R], *args) -> "Future[R] | Deferred":
    """`pool.submit(fn, *args)`, or, once the interpreter is shutting down (a run in a worker thread
    whose main thread ended: the executor takes no more work), the same work deferred to `result()`."""
    try:
        return pool.submit(fn, *args)
    except RuntimeError:   # "cannot schedule new futures after interpreter shutdown"
        return Deferred(fn, args)


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
