"""What every stage config shares: the stage base with the stage's declared
capabilities, and the distillation and fine-tuning tables several stages use.

Kept apart from `stages.py` so each stage's config module (`prune_config.py`)
can build on them; `compress.recipe.stages` re-exports every name.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from compress.recipe.schema import Budgets, OptimizerConfig, StrictModel, TrainingConfig


class StageConfigBase(StrictModel):
    """Base of every stage's config: its name, its budgets, and what the stage is.

    The class attributes below are the stage's declaration of what it needs and
    allows. The loader's cross-stage rules (`recipe/loader.py`) read only these,
    never a stage type, so a stage registered from outside the package is checked
    like a built-in one. A subclass sets the ones that differ from the default;
    `needs_torch` / `needs_labels` refine them for one configured instance (prune
    trains on labels only when it fine-tunes; quantize asks its method).

    Attributes:
        needs_torch_model: it reads or changes the torch model, so it cannot run in a
            recipe that starts from an ONNX file (`[model] onnx`).
        trains_on_labels: it fits on the training labels, so it cannot run on
            unlabeled data (`data.labeled = false`).
        trains_from_scratch: it may run first on an untrained model (train does);
            any other first stage needs `model.weights` or an ONNX file.
        must_be_last: nothing may follow it (export); at most one per recipe.
        followers: the stage types that may follow it, or None for any
            (quantize: only export), with `followers_reason` saying why.
    """

    needs_torch_model: ClassVar[bool] = True
    trains_on_labels: ClassVar[bool] = False
    trains_from_scratch: ClassVar[bool] = False
    must_be_last: ClassVar[bool] = False
    followers: ClassVar[tuple[str, ...] | None] = None
    followers_reason: ClassVar[str] = ""

    type: str
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Stage name, used for its folder (default: its type, numbered if repeated).",
    )
    budgets: Budgets = Field(default_factory=Budgets, description="This stage's budgets.")

    def needs_torch(self) -> bool:
        """Whether this configured stage needs a torch model (default: the class's)."""
        return self.needs_torch_model

    def needs_labels(self) -> bool:
        """Whether this configured stage reads labels (default: the class's)."""
        return self.trains_on_labels

    def label_readers(self) -> list[tuple[str, str]]:
        """(key path in this stage's table, why) for each part of this configured
        stage that reads labels, so it cannot run on `data.labeled = false`; empty
        when it can. Default: the whole stage (`type`) when `needs_labels()`.

        Example:
            >>> from compress.recipe.stages import DistillStageConfig
            >>> student = {"architecture": "mlp"}
            >>> DistillStageConfig(type="distill", student=student, alpha=0.5).label_readers()[0][0]
            'alpha'
        """
        return [("type", f"{self.type!r} trains on labels")] if self.needs_labels() else []

    def label(self) -> str:
        """How messages name the stage's kind: its type (quantize adds its method)."""
        return self.type

    @classmethod
    def onnx_forms(cls, name: str) -> list[str]:
        """What of the stage registered as `name` runs on an ONNX file, for messages:
        nothing, or its name (quantize lists its methods that do)."""
        return [] if cls.needs_torch_model else [name]


_StageBase = StageConfigBase  # the name the stage configs were written against


class DistillConfig(StrictModel):
    """Hinton distillation: alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE."""

    temperature: float = Field(4.0, gt=0, description="Softmax temperature T.")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the soft-target term.")


class FinetuneConfig(TrainingConfig, DistillConfig):
    """Fine-tuning after each pruning step; `distill = true` adds the distillation loss."""

    epochs: int = Field(1, ge=0, description="Fine-tune epochs after each step (0: none).")
    optimizer: OptimizerConfig | None = Field(  # type: ignore[assignment]
        None,
        description="Optimizer table. Default: the optimizer the model was last trained "
        "with in this run, at its last epoch's learning rate (at least a tenth of that "
        "fit's peak); AdamW lr 1e-4 for a model that arrived with weights; Adam lr 1e-3 "
        "for one neither trained nor loaded. The report says which was used.",
    )
    distill: bool = Field(False, description="Distil from a teacher while fine-tuning.")
    distill_from: Literal["input", "teacher"] = Field(
        "input",
        description="The distillation teacher: the stage's unpruned input model, or the "
        "run's teacher (the first stage's model).",
    )


def distillation_label_readers(
    config: TrainingConfig, alpha: float, prefix: str = ""
) -> list[tuple[str, str]]:
    """What of a distilling training reads labels: alpha < 1 (the cross-entropy term)
    and early stopping on val_accuracy / val_loss. With alpha = 1 the student learns
    from the teacher's outputs only, and agreement with it is what validation reads."""
    out = []
    if alpha < 1:
        out.append((
            f"{prefix}alpha",
            f"alpha = {alpha:g} weights the labels' cross-entropy by 1 - alpha "
            "(alpha = 1 learns from the teacher's outputs only)",
        ))  # fmt: skip
    stopping = config.early_stopping
    if stopping is not None and stopping.monitor in ("val_accuracy", "val_loss"):
        out.append((
            f"{prefix}early_stopping.monitor",
            f"{stopping.monitor!r} reads labels (monitor 'val_agreement' or "
            "'val_kd_loss': agreement with the teacher)",
        ))  # fmt: skip
    return out
