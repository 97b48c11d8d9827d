"""A user's trained weights into a compress-built model: any producer, never pickle.

`[model] weights` names a state dict as safetensors (written by anything:
`safetensors.torch.save_file`, a compress stage folder) or as `.pt`/`.pth` read with
`torch.load(weights_only=True)`, which only reconstructs tensors and plain containers:
a pickled whole module is refused, with the reason. Keys may carry a wrapper's prefix
(`module.` from DataParallel, `model.` from Lightning) that the recipe strips.
Missing, unexpected or mis-shaped keys are a recipe error (exit 2) listing the first
few of each, raised before anything trains.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from compress.errors import RecipeError

WEIGHTS_FILE = "model.safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SHOWN = 5  # keys listed per kind of mismatch


def read_state_dict(path: str | Path, where: str = "model.weights") -> dict[str, torch.Tensor]:
    """The tensors a weights file holds, by key (a folder means its model.safetensors)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise RecipeError(f"{where}: {path}: weights file not found")
    if path.suffix in TORCH_SUFFIXES:
        return _torch_state_dict(path, where)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise RecipeError(f"{where}: {path}: not a readable safetensors file ({exc})") from None


def _torch_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RecipeError(
            f"{where}: {path}: refused: it holds more than tensors (a pickled module or "
            "object), which only full pickle could load, and pickle runs arbitrary code. "
            "Save `model.state_dict()` instead (torch.save or safetensors). "
            f"({str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise RecipeError(f"{where}: {path}: unreadable ({exc})") from None
    # checkpoints often wrap the state dict: {"state_dict": {...}} or {"model": {...}}
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise RecipeError(f"{where}: {path}: not a state dict (a mapping of names to tensors)")
    return loaded


def strip_prefix(state: dict[str, torch.Tensor], prefix: str | None) -> dict[str, torch.Tensor]:
    """`state` with `prefix` removed from every key that has it."""
    if not prefix:
        return state
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def check_fits(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """RecipeError listing the first few missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} mis-shaped: {_listed(shapes)}")
    if problems:
        hint = ""
        prefixes = {k.split(".", 1)[0] + "." for k in unexpected if "." in k}
        if missing and len(prefixes) == 1:
            hint = f" (do the keys carry a prefix? try weights_prefix = {prefixes.pop()!r})"
        raise RecipeError(f"{where}: the weights do not fit the model: {'; '.join(problems)}{hint}")


def load_weights_(
    model: nn.Module, path: str | Path, prefix: str | None = None, where: str = "model.weights"
) -> nn.Module:
    """Load a weights file into `model` in place, strictly (see the module docstring).

    Example:
        >>> load_weights_(model, "resnet18.pth", prefix="module.")  # doctest: +SKIP
    """
    state = strip_prefix(read_state_dict(path, where), prefix)
    check_fits(model, state, where)
    model.load_state_dict(state, strict=True)
    return model
