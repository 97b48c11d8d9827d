"""The `[data]` table of `source = "text-corpus"`: plain text documents for a causal LM.

Kept apart from `DataConfig`'s module because none of the labelled-text or image keys
apply: the class refuses every inherited key it does not use (a changed value names the
key), and adds its own. The loader is `compress/data/text_corpus.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from compress.recipe.schema.data import DATA_CONFIGS, DataConfig

TEXT_CORPUS = "text-corpus"

# the DataConfig keys this source reads; every other inherited key must keep its default
_USED = ("source", "package", "tokenizer", "val_fraction", "test_fraction", "labeled")


class TextCorpusConfig(DataConfig):
    """Plain UTF-8 text files as token windows for a causal LM, without labels.

    Each file is one document, tokenized with the model's tokenizer and cut into
    non-overlapping windows; splits are by whole document.

    Example:
        >>> config = TextCorpusConfig(source="text-corpus", files=["data/janeausten/*.txt"],
        ...                           test_package="scattertext",
        ...                           test_package_files=["data/hamlet.txt"])
        >>> config.window
        512
    """

    source: Literal["text-corpus"] = Field(
        TEXT_CORPUS, description="'text-corpus': plain text documents for a causal LM."
    )
    files: list[str] = Field(
        [],
        description="Training documents: glob patterns (relative to the working directory, "
        "like every path of a recipe; `**` recurses), each matching file one document, read "
        "as UTF-8. Matches are taken in sorted order, each file once.",
    )
    package: str | None = Field(
        None,
        description="Training documents inside an installed Python package (found with "
        "importlib, never imported), with `package_files`; beside or instead of `files`.",
    )
    package_files: list[str] = Field(
        [], description="Paths inside `package`'s folder, e.g. ['data/hamlet.txt']."
    )
    test_files: list[str] = Field(
        [],
        description="Held-out documents for the test split, globs like `files`. Without "
        "test documents, `test_fraction` of the training documents is held out (seeded).",
    )
    test_package: str | None = Field(
        None, description="Held-out documents inside this installed package, with "
        "`test_package_files`."
    )  # fmt: skip
    test_package_files: list[str] = Field(
        [], description="Paths inside `test_package`'s folder, e.g. ['data/hamlet.txt']."
    )
    window: int = Field(
        512,
        ge=2,
        le=32768,
        description="Tokens per row: each document is cut into non-overlapping windows of "
        "this many tokens from its start; the last partial window is dropped, and no window "
        "spans two documents or two splits.",
    )
    max_train_tokens: int | None = Field(
        None,
        gt=0,
        description="At most this many training tokens (whole windows, rounded down): a "
        "seeded sample of windows from every training document, kept in document order.",
    )
    max_val_tokens: int | None = Field(
        None,
        gt=0,
        description="At most this many validation tokens: the first windows, in order.",
    )
    max_test_tokens: int | None = Field(
        None,
        gt=0,
        description="At most this many test tokens: the first windows, in order (16384 "
        "with window = 512: the first 32 windows of the test documents).",
    )
    tokenizer: str | None = Field(
        None,
        description="A tokenizer.json file or its folder (default: the model's folder, "
        "its family's `files`; for a GGUF model, the folder it is converted to).",
    )
    val_fraction: float = Field(
        0.15,
        gt=0.0,
        lt=0.5,
        description="Share of the training documents (whole documents, seeded) held out for "
        "validation; at least one.",
    )
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=0.5,
        description="Without test documents: the share of the documents (whole, seeded) "
        "held out for test; at least one.",
    )
    labeled: Literal[False] = Field(
        False,
        description="Always false: a corpus has no labels (the next tokens are the target); "
        "stages that read labels are refused, agreement replaces accuracy.",
    )

    @field_validator("files", "package_files", "test_files", "test_package_files")
    @classmethod
    def _no_blank_entries(cls, value: list[str]) -> list[str]:
        if any(not entry.strip() for entry in value):
            raise ValueError(f"an empty path or pattern in {value}")
        return value

    @model_validator(mode="after")
    def _text_keys_for_text_sources(self) -> TextCorpusConfig:
        # replaces DataConfig's check of the same name: this source's keys are its own
        fields = type(self).model_fields
        stray = sorted(
            name
            for name in DataConfig.model_fields
            if name not in _USED and getattr(self, name) != fields[name].get_default()
        )
        if stray:
            verb = "does" if len(stray) == 1 else "do"
            raise ValueError(
                f"{', '.join(stray)} {verb} not apply to data.source = 'text-corpus' (its keys: "
                "files, package(_files), test_files, test_package(_files), window, max_*_tokens, "
                "val_fraction, test_fraction, tokenizer)"
            )
        for prefix in ("", "test_"):
            package = getattr(self, f"{prefix}package")
            listed = getattr(self, f"{prefix}package_files")
            if bool(package) != bool(listed):
                raise ValueError(
                    f"{prefix}package and {prefix}package_files come together "
                    f"(got {prefix}package = {package!r}, {prefix}package_files = {listed})"
                )
        if not self.files and not self.package:
            raise ValueError("text-corpus needs training documents: files or package + "
                             "package_files")  # fmt: skip
        for key in ("max_train_tokens", "max_val_tokens", "max_test_tokens"):
            cap = getattr(self, key)
            if cap is not None and cap < self.window:
                raise ValueError(f"{key} = {cap} holds no window of {self.window} tokens")
        return self

    def takes_model_tokenizer(self) -> bool:
        return self.tokenizer is None

    @property
    def has_test_documents(self) -> bool:
        """True when the recipe names held-out documents (no test share is carved)."""
        return bool(self.test_files or self.test_package)


# the recipe layer knows the class without importing the data layer (which registers the
# loader with the same class through `register_data_source`)
DATA_CONFIGS.register(TEXT_CORPUS)(TextCorpusConfig)
