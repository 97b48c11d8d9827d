"""Per-layer settings from a recipe table: exact name, then `re:` pattern, then default.

The resolver lives in `compress.recipe.per_layer`, beside the other recipe parsing,
and is shared with pruning; it is re-exported here for the quantize stage.
"""

from compress.recipe.per_layer import resolve_per_layer

__all__ = ["resolve_per_layer"]
