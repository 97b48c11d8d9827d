"""Recipes: TOML files validated into config objects."""

from compress.recipe.loader import Recipe, apply_override, load_recipe, validate_recipe

__all__ = ["Recipe", "apply_override", "load_recipe", "validate_recipe"]
