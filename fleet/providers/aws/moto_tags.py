"""A faster tag lookup for the moto servers fleet starts (the sandbox, the fault runs, the tests).

moto answers "the tags of this resource" by scanning every tag of the account through its filter
matcher, once per resource and again per tag filter, so `DescribeInstances` with fleet's tag filters
costs instances × filters × all tags: a server that has seen a few hundred instances spent most of
its CPU there (a quarter of a test module's). The tags of one resource are a dictionary lookup in the
same store; the answer is the same list (same keys, same order) as moto's own scan gives.
"""
from __future__ import annotations

from typing import Any

_GLOB = frozenset("*?[")
_installed = False


def install() -> None:
    """Replace moto's per-resource tag scan in this process (idempotent). Needs moto importable."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.models.tags import EC2_PREFIX_TO_RESOURCE
    from moto.ec2.utils import get_prefix
    global _installed
    if _installed:
        return
    scan = TaggedEC2Resource.get_tags

    def get_tags(self: Any) -> list[dict[str, str]]:
        rid = self.id
        if not rid or _GLOB & set(rid):       # an id moto's filter would read as a pattern: its own way
            return scan(self)
        tags = self.ec2_backend.tags.get(rid) or {}
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(rid), "")
        return [{"resource_id": rid, "key": k, "value": v, "resource_type": kind} for k, v in list(tags.items())]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]
    _installed = True
