"""`architecture = "package.module:function"`: the user's own model, any nn.Module.

The function is imported and called with the config's `kwargs`, plus `num_classes`
and `input_shape` when it accepts them. Nothing is known of its layers, so every
pruning attention adapter looks at it (BERT-like, fused qkv, nn.TransformerEncoder).
"""

from __future__ import annotations

import inspect

from compress.errors import StageError
from compress.models.family import ModelFamily, register_family
from compress.recipe.schema import CallableModelConfig
from compress.recipe.schema.models import USER_ARCHITECTURE
from compress.registry import import_callable


@register_family(USER_ARCHITECTURE)
class UserModelFamily(ModelFamily):
    """A model the user's `package.module:function` returns."""

    config_class = CallableModelConfig
    attention = None

    def build(self, config, input_shape, num_classes):
        from torch import nn

        function = import_callable(config.architecture, "model.architecture")
        kwargs = dict(config.kwargs)
        accepted = inspect.signature(function).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        for name, value in (("num_classes", num_classes), ("input_shape", tuple(input_shape))):
            if (name in accepted or takes_any) and name not in kwargs:
                kwargs[name] = value
        try:
            model = function(**kwargs)
        except Exception as exc:  # the user's code: name it, keep its message
            raise StageError(
                f"model.architecture {config.architecture} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(model, nn.Module):
            raise StageError(
                f"model.architecture {config.architecture} returned {type(model).__name__}, "
                "expected a torch.nn.Module"
            )
        return model
