"""Data sources (a registry) and the splits built from them."""

from __future__ import annotations

from compress.data.bundle import DataBundle, RawData, RowReader, Split
from compress.data.image_files import ImageFiles
from compress.data.image_folder import build_image_bundle
from compress.data.sources import DATA_SOURCES, load_raw, register_data_source
from compress.data.splits import build_bundle, stratified_split
from compress.data.text import TextRaw, build_text_bundle
from compress.data.text_corpus import load_corpus  # registers "text-corpus"
from compress.recipe.schema import DataConfig


def load_data(config: DataConfig, seed: int) -> DataBundle:
    """Load the recipe's data source and split it (see `build_bundle`).

    Example:
        >>> bundle = load_data(DataConfig(), seed=0)  # doctest: +SKIP
        >>> bundle.input_shape
        (1, 8, 8)
    """
    raw = load_raw(config)
    to_bundle = getattr(raw, "to_bundle", None)
    if to_bundle is not None:  # a source that splits its own data (data/text_corpus.py)
        return to_bundle(config, seed)
    if isinstance(raw, TextRaw):
        return build_text_bundle(raw, config, seed)
    if isinstance(raw, ImageFiles):
        return build_image_bundle(raw, config, seed)
    return build_bundle(raw, config, seed)


__all__ = [
    "DATA_SOURCES",
    "DataBundle",
    "RawData",
    "RowReader",
    "Split",
    "build_bundle",
    "load_corpus",
    "load_data",
    "load_raw",
    "register_data_source",
    "stratified_split",
]
