"""What every config table shares: the strict base model and the user-callable pattern."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

CALLABLE_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
"""A user callable is written "package.module:function"; a recipe that names one runs
that code when it runs (`--no-user-code` refuses it: `recipe.loader.USER_CODE_KEYS`)."""


class StrictModel(BaseModel):
    """Base of every config table: unknown keys are errors, values are validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
