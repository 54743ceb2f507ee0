"""A local machine whose job left a directory tree deeper than Python's stack (a `cp -r . sub/` run in
a loop, a runaway recursive unpack) is still released: shutil.rmtree recurses once per level, so
every `fleet down` of that lease failed on "RecursionError: maximum recursion depth exceeded", the
directory and its disk never freed and the lease never released."""
from __future__ import annotations

from pathlib import Path

from fleet.providers.local import LocalProvider
from tests.fixtures.deep_tree import deep_tree, remove


def test_a_tree_deeper_than_the_stack_is_deleted_at_release(local_lease):
    lease = local_lease()
    d = Path(lease.machines[0].provider_ref["dir"])
    deep_tree(d / "root")
    try:
        LocalProvider().release(lease)
        assert not d.exists(), "the machine's directory was left behind"
    finally:
        remove(d)
