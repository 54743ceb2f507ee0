"""Prebaked machine images: recipes (images/<recipe>/), their content hash, and the bake."""
from __future__ import annotations

from .recipe import HASH_TAG, RECIPE_TAG, Recipe, image_name, list_recipes, load_recipe

__all__ = ["HASH_TAG", "RECIPE_TAG", "Recipe", "image_name", "list_recipes", "load_recipe"]
