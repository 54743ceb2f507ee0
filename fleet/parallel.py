"""A bounded thread pool over a list: leasing, staging, extending on N machines at once."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel(items: list[T], fn: Callable[[T], R], max_workers: int = 16) -> list[R]:
    """Run fn over items in a bounded pool; results in order; raise the first error after all finished."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        results, errors = [], []
        for fut in futures:
            try:
                results.append(fut.result())
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
    if errors:
        raise errors[0]
    return results
