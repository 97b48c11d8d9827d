"""Config classes of the built-in stages, one per recipe `type`, and the stage-config
registry every recipe's `stages` list validates through.

`STAGE_CONFIGS` maps a recipe `type` to its config class. The built-in ones register
here, so a recipe validates without importing the stages (layer 5); a plugin stage's
`@register_stage` registers its config class (compress/stages/registry.py). Each
config class declares what its stage needs and allows (`StageConfigBase`), which is
all the loader's cross-stage rules read. See docs/adding-a-stage.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SerializeAsAny

from compress.recipe import quantize_methods  # noqa: F401  (registers the methods' configs)
from compress.recipe.prune_config import PruneStageConfig, PruneTarget  # noqa: F401 (re-export)
from compress.recipe.quantize_config import (  # noqa: F401 (re-export)
    QUANTIZE_METHOD_CONFIGS,
    CalibrationConfig,
    FallbackConfig,
    QATConfig,
    QuantizeStageConfig,
    method_name,
)
from compress.recipe.schema import BatchNormConfig, ModelConfig, TrainingConfig
from compress.recipe.stage_common import (  # noqa: F401 (re-export)
    DistillConfig,
    FinetuneConfig,
    StageConfigBase,
    _StageBase,
    distillation_label_readers,
)
from compress.registry import Registry, registered_table

STAGE_CONFIGS: Registry[type[StageConfigBase]] = Registry("stage type")


class TrainStageConfig(_StageBase, TrainingConfig):
    """Train the current model (the teacher, when it is the first stage)."""

    trains_on_labels = True
    trains_from_scratch = True

    type: Literal["train"]


class DistillStageConfig(_StageBase, TrainingConfig, DistillConfig):
    """Train `student` against the current model as a frozen teacher.

    With alpha = 1 it reads no labels: it runs on unlabeled data, validated by
    agreement with the teacher (`training/validation.py`).
    """

    type: Literal["distill"]
    student: ModelConfig = Field(description="The student architecture table.")
    feature_layers: list[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]] | None = (
        Field(
            None,
            min_length=1,
            description="Hidden-state distillation (hf-encoder): [student, teacher] pairs of "
            "hidden states, 0 the embeddings and i + 1 layer i's output (e.g. [[1, 1], "
            "[2, 3], [3, 5]] for a student of teacher layers 0, 2, 4); MSE over unmasked "
            "tokens, added to the logits loss. The teacher then runs on every batch.",
        )
    )
    feature_weight: float = Field(
        1.0, ge=0, description="Weight of the hidden-state loss (with feature_layers)."
    )

    def needs_labels(self) -> bool:
        return bool(self.label_readers())

    def label_readers(self) -> list[tuple[str, str]]:
        return distillation_label_readers(self, self.alpha)


class ExportStageConfig(_StageBase):
    """Write the deployable ONNX model and prove it matches the torch model."""

    needs_torch_model = False  # an ONNX-input recipe's file is copied and checked
    must_be_last = True

    type: Literal["export"]
    opset: int | None = Field(None, ge=17, description="ONNX opset (default: the exporter's).")
    parity_batch_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        [1, 7], min_length=2, description="Batch sizes at which ONNX must match torch."
    )
    parity_atol: float = Field(1e-4, gt=0, description="Absolute tolerance on logits.")
    parity_rtol: float = Field(1e-3, ge=0, description="Relative tolerance on logits.")
    # 0.9, not 0.97: a ResNet-18 whose int8 file lost 0.13 points of accuracy agreed on
    # 95% of its validation predictions (docs/olive.md). This check catches a broken
    # int8 file (exit 3); how faithful it must be is a budget (agreement_min, exit 1,
    # the model still saved).
    agreement_min: float = Field(
        0.9,
        ge=0,
        le=1,
        description="For an int8 model: least share of validation predictions equal to the "
        "fp32 model's, below which the int8 file counts as broken (the stage fails). Gate "
        "fidelity with the budget `agreement_min` (test split, vs the baseline).",
    )
    batch_norm: BatchNormConfig = Field(
        default_factory=BatchNormConfig,
        description="A float model's BatchNorm statistics re-estimated before it is "
        "exported (kept when they measurably help on validation): a model that arrived with "
        "weights from elsewhere has never been recalibrated on this data.",
    )


for _name, _config in (
    ("train", TrainStageConfig),
    ("distill", DistillStageConfig),
    ("prune", PruneStageConfig),
    ("quantize", QuantizeStageConfig),
    ("export", ExportStageConfig),
):
    STAGE_CONFIGS.register(_name)(_config)

StageConfig = Annotated[SerializeAsAny[StageConfigBase], registered_table(STAGE_CONFIGS)]
"""One `[[stages]]` table, validated by the config class registered under its `type`."""

# stage configs kept in their own module (each registers itself in STAGE_CONFIGS)
from compress.recipe import decoder_stages  # noqa: E402,F401
