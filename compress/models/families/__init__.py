"""The built-in model families, one module each; importing this package registers them.

The recipe layer imports it by name on the first `[model]` lookup
(`compress.recipe.schema.models.BUILTIN_FAMILIES`). A family from outside the
package registers itself the same way (`@register_family("name")` on its class) in
a module the user imports: docs/adding-a-model-family.md.
"""

from compress.models.families import (  # noqa: F401 (each import registers its family)
    cnn,
    hf_causal_lm,
    hf_encoder,
    mlp,
    mobilenet,
    resnet,
    transformer,
    user,
)
