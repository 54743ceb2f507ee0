"""Baked images in the account: find one by recipe hash (the bake's no-op check and what the stack
resolves templates by), and list them for `fleet image ls`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .recipe import HASH_TAG, NAME_HASH_CHARS, RECIPE_TAG, list_recipes, load_recipe

MODE_TAG = "fleet:bake-mode"      # "apply" (a real bake) or "check" (the sandbox's dry bake)
BASE_TAG = "fleet:base-image"     # the image id the builder started from


@dataclass(frozen=True)
class ImageInfo:
    image_id: str
    name: str
    recipe: str
    content_hash: str
    state: str
    created: str
    mode: str
    base_image: str = ""             # empty: baked before fleet recorded it
    current: bool | None = None      # the recipe's hash today is this image's hash (None: no such recipe)

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "name": self.name, "recipe": self.recipe,
                "hash": self.content_hash, "state": self.state, "created": self.created,
                "mode": self.mode, "base_image": self.base_image or None, "current": self.current}


def _tags(image: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in image.get("Tags", []) or []}


def _info(image: dict[str, Any]) -> ImageInfo:
    tags = _tags(image)
    return ImageInfo(image_id=image["ImageId"], name=image.get("Name", ""),
                     recipe=tags.get(RECIPE_TAG, "?"), content_hash=tags.get(HASH_TAG, ""),
                     state=image.get("State", "?"), created=image.get("CreationDate", ""),
                     mode=tags.get(MODE_TAG, "apply"), base_image=tags.get(BASE_TAG, ""))


def find_image(ec2, content_hash: str, states: tuple[str, ...] = ("available", "pending")
               ) -> ImageInfo | None:
    """Our newest image carrying this recipe hash, if any (pending ones count: a bake is under way)."""
    images = ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{HASH_TAG}", "Values": [content_hash]},
        {"Name": "state", "Values": list(states)}]).get("Images", [])
    if not images:
        return None
    return _info(max(images, key=lambda i: i.get("CreationDate", "")))


def list_images(ec2) -> list[ImageInfo]:
    """Every image of ours baked by fleet, marked current/stale against the recipes here."""
    images = ec2.describe_images(Owners=["self"], Filters=[
        {"Name": "tag-key", "Values": [HASH_TAG]}]).get("Images", [])
    current: dict[str, str] = {}
    for name in list_recipes():
        try:
            current[name] = load_recipe(name).content_hash
        except Exception:   # noqa: BLE001 — a broken recipe is reported by `bake`, not here
            continue
    out = []
    for img in images:
        info = _info(img)
        known = current.get(info.recipe)
        out.append(ImageInfo(**{**info.__dict__,
                                "current": None if known is None else known == info.content_hash}))
    return sorted(out, key=lambda i: (i.recipe, i.created), reverse=False)


def unbaked_recipes(images: list[ImageInfo]) -> list[dict[str, str]]:
    """Recipes here whose current hash has no image yet (what `fleet image bake` would make)."""
    have = {i.content_hash for i in images}
    out = []
    for name in list_recipes():
        try:
            r = load_recipe(name)
        except Exception:  # noqa: BLE001
            continue
        if r.content_hash not in have:
            out.append({"recipe": name, "hash": r.content_hash, "name": r.image_name})
    return out


def short(content_hash: str) -> str:
    return content_hash[:NAME_HASH_CHARS]


def images_table(images: list, missing: list[dict]):
    """`fleet image ls` as the shared table model: baked images, then recipes not baked yet."""
    from ..render import Column, Table
    table = Table([Column(c) for c in ("recipe", "image", "id", "hash", "state", "created", "mode", "base",
                                       "current")],
                  title="fleet images", empty="no images and no recipes")
    for i in images:
        current = {True: "yes", False: "stale", None: "-"}[i.current]
        table.add(i.recipe, i.name, i.image_id, short(i.content_hash), i.state, i.created, i.mode,
                  i.base_image or "?", current)
    for m in missing:
        table.add(m["recipe"], m["name"], "-", short(m["hash"]), "not baked", "-", "-", "-", "-")
    return table
