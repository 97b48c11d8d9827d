"""One run setup and one stage plan, shared by `compress run`, the distributed
worker and `compress tune`'s trials.

The order matters for reproducibility: threads, then the seed, then the data, then
the model's initial weights (seeded again, so a trial builds the same model as a run
whatever the data loading drew).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.artifacts import atomic_write_text
from compress.data import DataBundle, load_data
from compress.errors import RecipeError
from compress.models import ModelSpec, load_weights_, new_model
from compress.models.family import family_of, load_pretrained_, resolve_model_config
from compress.models.onnx_file import onnx_spec
from compress.recipe.loader import Recipe
from compress.recipe.schema import OnnxModelConfig
from compress.stages import STAGES, RunContext, StageResult
from compress.stages.base import seed_everything
from compress.stages.start import StartConfig, StartStage


def prepare_run_dir(out_dir: Path, recipe: Recipe) -> None:
    """Create the run directory and write the resolved recipe into it.

    A kill during an atomic write leaves its temporary sibling behind; it never
    passes for an artifact (hidden, *.tmp), but it is litter: clear it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)
    atomic_write_text(out_dir / "recipe.resolved.toml", recipe.to_toml())


def prepare_process(recipe: Recipe) -> None:
    """Training threads (when the recipe sets them) and every random generator."""
    if recipe.runtime.train_threads:
        torch.set_num_threads(recipe.runtime.train_threads)
    seed_everything(recipe.seed)


def load_run_data(recipe: Recipe) -> DataBundle:
    """`prepare_process`, then the recipe's data, split by its seed.

    Texts without a `data.tokenizer` take the tokenizer of the model's folder
    (the folder its family's `files` names)."""
    prepare_process(recipe)
    data = recipe.data
    if data.takes_model_tokenizer():
        folder = model_files(recipe.model)
        if folder is not None:
            data = data.model_copy(update={"tokenizer": str(folder)})
    return load_data(data, recipe.seed)


def model_files(config: Any) -> Path | None:
    """The folder of the pretrained files a model config names (its family's `files`;
    None for an ONNX file and for families without files)."""
    if isinstance(config, OnnxModelConfig):
        return None
    return family_of(config).files(config)


def initial_model(recipe: Recipe, data: DataBundle) -> tuple[nn.Module | None, ModelSpec]:
    """The recipe's `[model]`, built (seeded) for the data's inputs, with its pretrained
    weights (a family that names a folder: `load_pretrained_`) and its `weights`; for
    an ONNX file, no torch model and the file's own inputs (checked against the data)."""
    seed_everything(recipe.seed)
    if isinstance(recipe.model, OnnxModelConfig):  # read, not built: no torch model
        return None, onnx_spec(recipe.model, data)
    config = resolve_model_config(recipe.model)  # complete: model.json rebuilds it alone
    try:
        model, spec = new_model(config, data.input_shape, data.num_classes, data.inputs)
    except (ValueError, RuntimeError, IndexError) as exc:  # the builder could not take the data
        raise RecipeError(
            f"model.architecture {recipe.model.architecture!r} cannot be built for the data's "
            f"input shape {tuple(data.input_shape)} and {data.num_classes} classes "
            f"({type(exc).__name__}: {exc})"
        ) from None
    load_pretrained_(model, config, data.inputs)
    if recipe.model.weights:
        load_weights_(model, recipe.model.weights, recipe.model.weights_prefix)
    return model, spec


def stage_plan(recipe: Recipe) -> list[tuple[Any, str]]:
    """(config, folder name) of every stage to run, in order: the starting model
    first when the recipe brings trained weights (it is then the baseline)."""
    plan = list(zip(recipe.stages, recipe.stage_names()))
    if isinstance(recipe.model, OnnxModelConfig):
        plan.insert(0, (StartConfig(onnx=recipe.model.onnx), "input"))
    elif recipe.model.weights:
        plan.insert(0, (StartConfig(weights=recipe.model.weights), "input"))
    elif recipe.model.pretrained_source():  # a whole model in its family's files (an LM)
        plan.insert(0, (StartConfig(pretrained=recipe.model.pretrained_source()), "input"))
    return plan


def run_stage(ctx: RunContext, config: Any, name: str, workdir: Path) -> StageResult:
    """Run one stage of the plan in `workdir` (the stage registry picks the class of
    every stage a recipe names; the starting point is not one of them)."""
    ctx.workdir = workdir
    stage_class = StartStage if isinstance(config, StartConfig) else STAGES.get(config.type)
    return stage_class(config, name).run(ctx)
