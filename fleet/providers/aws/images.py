"""The AMI a lease boots, as the run's environment records it, and whether a recorded one still
exists (`fleet rerun` asks before leasing: fleet/environment/pin.py).

The recipe and its content hash come from the AMI's own `fleet:recipe` / `fleet:recipe-hash` tags
(set when `fleet image bake` made it), so the record names what the image was built from even when
the recipe directory has changed since; the stack's template names the recipe where tags are absent.
"""
from __future__ import annotations

from typing import Any

from ...environment.image import image_meta
from ...images.recipe import HASH_TAG, RECIPE_TAG

GONE_STATES = ("deregistered", "failed", "error", "invalid")


def _describe(ec2, image_id: str) -> dict[str, Any] | None:
    try:
        images = ec2.describe_images(ImageIds=[image_id]).get("Images", [])
    except Exception as exc:  # noqa: BLE001 — InvalidAMIID.NotFound / .Unavailable: the image is gone
        if "InvalidAMIID" in str(exc):
            return None
        raise
    return images[0] if images else None


def lease_image(ec2, image_id: str | None, recipe: str | None) -> dict[str, Any]:
    """lease.meta["image"]: the template's AMI with its recipe and recipe hash (best effort: an
    image that cannot be described is recorded by id and the template's recipe alone)."""
    if not image_id:   # the launch template's own default: the machine reports its OS image instead
        return {}
    try:
        image = _describe(ec2, image_id) or {}
    except Exception:  # noqa: BLE001 — the lease must not fail over a description
        image = {}
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", []) or []}
    return image_meta(image_id, tags.get(RECIPE_TAG) or recipe, tags.get(HASH_TAG))


def image_exists(ec2, image_id: str) -> bool:
    image = _describe(ec2, image_id)
    return image is not None and image.get("State", "available") not in GONE_STATES
