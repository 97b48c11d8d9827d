"""Tiny recipes, models and data for tests, so the whole suite runs in minutes on 2 cores.

Nothing here is used by the pipeline itself; it imports only torch and tomli_w
beyond the standard library.

Example:
    >>> from compress.testing import TinyCNN, tiny_recipe_dict
    >>> model = TinyCNN()
    >>> model(*model.example_inputs()).shape
    torch.Size([2, 10])
    >>> tiny_recipe_dict(budgets={"accuracy_min": 0.5})["budgets"]
    {'accuracy_min': 0.5}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
import torch
from torch import nn

from compress.data.bundle import DataBundle, Split
from compress.testing.cli import CliRun, run_cli

if TYPE_CHECKING:  # imported lazily below: keeps `import compress.testing` light
    from compress.stages.base import RunContext

__all__ = [
    "CliRun",
    "TinyCNN",
    "TinyResNet",
    "deep_merge",
    "run_cli",
    "tiny_bundle",
    "tiny_recipe_dict",
    "tiny_run_context",
    "write_recipe",
]


# --------------------------------------------------------------------------- recipes


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `overrides` merged in: tables merge, everything else replaces.

    Args:
        base: the dict to start from (not changed).
        overrides: values to set; a dict value merges into a dict of `base`.

    Example:
        >>> deep_merge({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}})
        {'a': {'x': 1, 'y': 3}}
    """
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def tiny_recipe_dict(**overrides: Any) -> dict[str, Any]:
    """A raw recipe dict that runs end to end in a few seconds on sklearn-digits.

    A CNN of widths [8, 16] (1,442 parameters, 23,200 MACs on 1x8x8), one
    `train` stage of 2 epochs and an `export` stage; latency is measured with
    2 warm-up runs and 2 rounds of 5 runs, on one thread.

    Args:
        **overrides: top-level recipe keys; tables (dicts) merge into the
            defaults, other values (e.g. `stages`) replace them.

    Example:
        >>> tiny_recipe_dict(runtime={"providers": ["cuda"]})["runtime"]["repeats"]
        5
    """
    recipe = {
        "name": "tiny",
        "description": "A tiny digits run for tests.",
        "seed": 0,
        "data": {"source": "sklearn-digits"},
        "model": {"architecture": "cnn", "widths": [8, 16]},
        "runtime": {
            "threads": 1,
            "train_threads": 1,
            "batch_size": 1,
            "warmup": 2,
            "repeats": 5,
            "rounds": 2,
        },
        "stages": [
            {
                "type": "train",
                "epochs": 2,
                "batch_size": 32,
                "optimizer": {"name": "adam", "lr": 0.01},
            },
            {"type": "export"},
        ],
    }
    return deep_merge(recipe, overrides)


def write_recipe(path: str | Path, recipe: dict[str, Any]) -> Path:
    """Write a raw recipe dict as TOML to `path` (parents created) and return the path.

    Example:
        >>> write_recipe(tmp_path / "t.toml", tiny_recipe_dict())  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- models


def _example(shape: tuple[int, ...], batch_size: int, seed: int) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch_size, *shape, generator=generator),)


class TinyCNN(nn.Module):
    """Two conv-BN-ReLU blocks, global pool and a linear classifier, on (1, 8, 8).

    Args:
        num_classes: outputs of `classifier`.
        channels: output channels of the two convolutions.

    Example:
        >>> model = TinyCNN(num_classes=3)
        >>> model(*model.example_inputs(batch_size=4)).shape
        torch.Size([4, 3])
    """

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int = 10, channels: tuple[int, int] = (4, 8)):
        super().__init__()
        first, second = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, first, 3, padding=1, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, 3, padding=1, bias=False),
            nn.BatchNorm2d(second),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(second, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))

    def example_inputs(self, batch_size: int = 2, seed: int = 0) -> tuple[torch.Tensor]:
        """A seeded random input batch, as a tuple of forward's positional args."""
        return _example(self.input_shape, batch_size, seed)


class TinyResNet(nn.Module):
    """A stem conv and one residual block (an elementwise add), pool, classifier.

    Args:
        num_classes: outputs of `classifier`.
        channels: width of the stem and the block.

    Example:
        >>> model = TinyResNet()
        >>> model(*model.example_inputs()).shape
        torch.Size([2, 10])
    """

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int = 10, channels: int = 4):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)) + x)
        return self.classifier(self.flatten(self.pool(out)))

    def example_inputs(self, batch_size: int = 2, seed: int = 0) -> tuple[torch.Tensor]:
        """A seeded random input batch, as a tuple of forward's positional args."""
        return _example(self.input_shape, batch_size, seed)


# --------------------------------------------------------------------------- data


def tiny_bundle(
    num_classes: int = 3,
    per_class: tuple[int, int, int] = (16, 8, 8),
    input_shape: tuple[int, ...] = (1, 8, 8),
    seed: int = 0,
) -> DataBundle:
    """A learnable synthetic DataBundle: each class is a fixed random pattern plus noise.

    Already normalised (mean 0, std 1 contract), so it can be fed to `fit`
    directly without a data source.

    Args:
        num_classes: number of classes.
        per_class: samples per class in the train, val and test splits.
        input_shape: per-sample shape.
        seed: seeds patterns and noise.

    Example:
        >>> bundle = tiny_bundle()
        >>> len(bundle.train), len(bundle.val), bundle.input_shape
        (48, 24, (1, 8, 8))
    """
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(num_classes, *input_shape, generator=generator)

    def split(count: int) -> Split:
        labels = torch.arange(num_classes).repeat_interleave(count)
        noise = 0.5 * torch.randn(len(labels), *input_shape, generator=generator)
        return Split(patterns[labels] + noise, labels)

    channels = input_shape[0] if len(input_shape) == 3 else 1
    return DataBundle(
        train=split(per_class[0]),
        val=split(per_class[1]),
        test=split(per_class[2]),
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        scale=1.0,
        mean=[0.0] * channels,
        std=[1.0] * channels,
        description="synthetic patterns for tests",
        identity=f"tiny-{seed}",
    )


# --------------------------------------------------------------------------- stages


def tiny_run_context(
    workdir: str | Path,
    data: DataBundle | None = None,
    *,
    model: nn.Module | None = None,
    teacher: nn.Module | None = None,
    seed: int = 0,
    recipe: dict[str, Any] | None = None,
) -> RunContext:
    """A RunContext for calling a stage directly, without the runner.

    The recipe is `tiny_recipe_dict(**recipe)`, validated field by field but
    not for stage order, so any stage can run on its own. Its `model` table is
    the spec's architecture; the model is built from it (seeded) unless given.

    Args:
        workdir: the stage's folder (a tmp_path).
        data: the splits (default: `tiny_bundle()`).
        model: the current model (default: built from the recipe's `model` table).
        teacher: the run's teacher (None: as if no stage had run yet).
        seed: the run seed; also seeds the built model's initialisation.
        recipe: top-level overrides of the tiny recipe, e.g. `{"model": {"widths": [4]}}`.

    Example:
        >>> ctx = tiny_run_context(tmp_path, recipe={"model": {"widths": [4]}})  # doctest: +SKIP
        >>> ctx.spec.num_classes, ctx.model.classifier.in_features  # doctest: +SKIP
        (3, 4)
    """
    from compress.models import ModelSpec, build_model
    from compress.recipe import Recipe
    from compress.stages.base import RunContext

    data = data if data is not None else tiny_bundle()
    validated = Recipe.model_validate(tiny_recipe_dict(**{"seed": seed, **(recipe or {})}))
    spec = ModelSpec(validated.model, tuple(data.input_shape), data.num_classes)
    if model is None:
        torch.manual_seed(seed)
        model = build_model(validated.model, spec.input_shape, spec.num_classes)
    return RunContext(
        recipe=validated,
        data=data,
        model=model,
        spec=spec,
        workdir=Path(workdir),
        seed=seed,
        teacher=teacher,
    )
