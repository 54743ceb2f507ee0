"""Which image a machine booted, and whether a recorded one still exists.

AWS machines boot a baked AMI; the provider puts its id, recipe and the recipe's content hash on
the lease (`lease.meta["image"]`, read from the AMI's `fleet:recipe*` tags). Machines fleet does
not make (local, ssh team hosts, Slurm nodes) run the host's own OS image, which the probe reads.

A provider that can say whether an image still exists, and boot a named one, declares it by
implementing `ChecksImages` (AWS: describe-images, RunInstances' ImageId); `fleet rerun` asks before
leasing anything and boots the recorded image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .model import ImageRef

LEASE_META_KEY = "image"


@runtime_checkable
class ChecksImages(Protocol):
    """A provider that boots images it can name: it can say whether one still exists, and boot a
    recorded one for its next leases (a rerun's)."""

    def image_exists(self, image: ImageRef) -> bool: ...

    def use_image(self, image: ImageRef) -> None: ...


def image_meta(image_id: str | None, recipe: str | None, recipe_hash: str | None) -> dict[str, Any]:
    """What a provider stores under lease.meta["image"]."""
    return {"kind": "ami", "id": image_id or "unknown", "recipe": recipe, "recipe_hash": recipe_hash}


def image_for(lease_meta: dict[str, Any], host_os: str) -> ImageRef:
    """The lease's image: the provider's (AMI), or the host's OS image the probe reported."""
    meta = lease_meta.get(LEASE_META_KEY)
    if isinstance(meta, dict) and meta.get("id"):
        return ImageRef(kind=str(meta.get("kind") or "ami"), id=str(meta["id"]), recipe=meta.get("recipe"),
                        recipe_hash=meta.get("recipe_hash"))
    return ImageRef(kind="host-os", id=host_os)


def recipe_image(recipe: str, root: Path | None = None, image_id: str | None = None) -> ImageRef:
    """The image a recipe bakes today (its name and content hash), e.g. to compare with a record."""
    from ..images.recipe import load_recipe
    r = load_recipe(recipe, root)
    return ImageRef(kind="ami", id=image_id or r.image_name, recipe=r.name, recipe_hash=r.content_hash)
