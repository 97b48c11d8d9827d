"""The `[data]` table: where the data comes from and how it is split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from compress.recipe.schema.base import CALLABLE_PATTERN, StrictModel


class DataConfig(StrictModel):
    """Where the data comes from and how it is split."""

    source: str = Field(
        "sklearn-digits",
        description="'sklearn-digits', 'fashion-mnist', 'npz', or 'package.module:function'.",
    )
    path: str | None = Field(
        None,
        description="Folder of the fashion-mnist IDX files, or the .npz file for 'npz'.",
    )
    val_fraction: float = Field(
        0.15, gt=0.0, lt=0.5, description="Share of the training data held out for validation."
    )
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=0.5,
        description="Share held out for test, for sources without an official test split.",
    )
    max_train_samples: int | None = Field(
        None, gt=0, description="Stratified subsample of the training split (quick runs)."
    )
    augment: Literal["none", "crop", "crop-flip"] = Field(
        "none", description="Training-time augmentation: random 2-pixel shift crops, h-flips."
    )
    allow_single_class: bool = Field(
        False,
        description=(
            "Accept labels of one class only (a warning in report.json's data entry "
            "instead of an error): such a classifier is right by construction."
        ),
    )

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        builtin = ("sklearn-digits", "fashion-mnist", "npz")
        if value in builtin or CALLABLE_PATTERN.match(value):
            return value
        raise ValueError(
            f"unknown data source {value!r}; allowed: {', '.join(builtin)} "
            "or 'package.module:function'"
        )
