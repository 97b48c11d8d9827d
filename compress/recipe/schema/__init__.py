"""Validated configuration objects for everything a recipe can say, except stages.

Every table forbids unknown keys, so a typo fails loudly with its key path.
Fractions are fractions: `accuracy_min = 0.95` means 95 %.

One module per table; every name is re-exported here, so import from
`compress.recipe.schema`:

- `base`: `StrictModel` (every table's base), `CALLABLE_PATTERN`, `Fraction`
- `data`: `[data]`, `DataConfig`
- `text_corpus`: `[data]` of `source = "text-corpus"`, `TextCorpusConfig`
- `models`: `[model]`, the built-in families' configs, `MODEL_CONFIGS` (filled by the
  family registration), `ModelConfigBase`, `ModelConfig`
- `runtime`: `[runtime]`, `RuntimeConfig`
- `distributed`: `[distributed]`, `DistributedConfig`
- `budgets`: `[budgets]` and `[stages.budgets]`, `Budgets`
- `training`: the training keys, `TrainingConfig` with its optimizer, schedule and
  early-stopping tables
- `tracking`: `[tracking]`, `TrackingConfig` and `MlflowConfig`
"""

from compress.recipe.schema.base import CALLABLE_PATTERN, Fraction, StrictModel
from compress.recipe.schema.budgets import Budgets
from compress.recipe.schema.data import DATA_CONFIGS, DataConfig, DataTable
from compress.recipe.schema.device import TrainingPlacementConfig
from compress.recipe.schema.distributed import DistributedConfig
from compress.recipe.schema.models import (
    MODEL_CONFIGS,
    CallableModelConfig,
    CNNConfig,
    MLPConfig,
    MobileNetConfig,
    ModelConfig,
    ModelConfigBase,
    OnnxModelConfig,
    ResNetConfig,
    TransformerConfig,
)
from compress.recipe.schema.runtime import GenerationConfig, ProfileConfig, RuntimeConfig
from compress.recipe.schema.text_corpus import TextCorpusConfig
from compress.recipe.schema.tracking import MlflowConfig, TrackingConfig
from compress.recipe.schema.training import (
    AdagradConfig,
    AdamConfig,
    BatchNormConfig,
    ConstantSchedule,
    CosineSchedule,
    EarlyStoppingConfig,
    ExponentialSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    OptimizerConfig,
    RMSPropConfig,
    ScheduleConfig,
    SGDConfig,
    StepSchedule,
    TrainingConfig,
    WarmupSchedule,
)

__all__ = [
    "MODEL_CONFIGS",
    "CALLABLE_PATTERN",
    "AdagradConfig",
    "AdamConfig",
    "BatchNormConfig",
    "Budgets",
    "CNNConfig",
    "CallableModelConfig",
    "ConstantSchedule",
    "CosineSchedule",
    "DATA_CONFIGS",
    "DataConfig",
    "DataTable",
    "DistributedConfig",
    "EarlyStoppingConfig",
    "ExponentialSchedule",
    "Fraction",
    "MLPConfig",
    "MlflowConfig",
    "MobileNetConfig",
    "ModelConfig",
    "ModelConfigBase",
    "OnnxModelConfig",
    "MultiStepSchedule",
    "OneCycleSchedule",
    "OptimizerConfig",
    "RMSPropConfig",
    "ResNetConfig",
    "GenerationConfig",
    "ProfileConfig",
    "RuntimeConfig",
    "SGDConfig",
    "ScheduleConfig",
    "StepSchedule",
    "StrictModel",
    "TextCorpusConfig",
    "TrackingConfig",
    "TrainingConfig",
    "WarmupSchedule",
    "TrainingPlacementConfig",
    "TransformerConfig",
]
