"""Training strategies: the loop reads one object for where and how a job runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.errors import StageError
from compress.models import build_model
from compress.recipe.schema import CNNConfig, TrainingConfig
from compress.testing import TinyCNN, tiny_bundle
from compress.training import SingleProcess, fit

pytestmark = pytest.mark.unit


class RecordingStrategy(SingleProcess):
    """One process, recording what the loop asks of its strategy."""

    def __init__(self, channels_last: bool = True):
        self.launched, self.shared, self.aborted = [], [], 0
        self._channels_last = channels_last

    @property
    def channels_last(self) -> bool:
        return self._channels_last

    def launch(self, job):
        self.launched.append(job)

    def share(self, values):
        self.shared.append(list(values))
        return values

    def abort(self):
        self.aborted += 1


def _model() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN(num_classes=3)


def test_fit_launches_the_job_and_shares_validation_through_the_strategy():
    strategy = RecordingStrategy()
    model = _model()
    config = TrainingConfig(epochs=2, batch_size=16)

    result = fit(model, tiny_bundle(), config, seed=0, strategy=strategy)

    (job,) = strategy.launched
    assert job.model is model and job.config is config and job.seed == 0
    assert len(strategy.shared) == 2  # one validation share per epoch
    assert [h["val_accuracy"] for h in result.history] == [s[1] for s in strategy.shared]
    assert strategy.aborted == 0


def test_a_failing_job_is_aborted_on_the_strategy():
    strategy = RecordingStrategy()
    config = TrainingConfig(epochs=1, batch_size=16, optimizer={"name": "sgd", "lr": 1e30})

    with pytest.raises(StageError, match="non-finite"):
        fit(_model(), tiny_bundle(), config, seed=0, strategy=strategy)

    assert strategy.aborted == 1


def test_channels_last_follows_the_strategy():
    layouts = []
    data = tiny_bundle(input_shape=(3, 8, 8))  # 3 channels: NCHW and NHWC differ

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.inner = build_model(CNNConfig(widths=[4]), (3, 8, 8), data.num_classes)

        def forward(self, x):
            if self.training:
                layouts.append(x.is_contiguous(memory_format=torch.channels_last))
            return self.inner(x)

    config = TrainingConfig(epochs=1, batch_size=16)
    fit(Spy(), data, config, seed=0, strategy=RecordingStrategy(channels_last=False))
    assert layouts and not any(layouts)

    layouts.clear()
    fit(Spy(), data, config, seed=0)
    assert layouts and all(layouts)


def _cache_key(strategy) -> str:
    from compress.pipeline.cache import StageCache
    from compress.recipe import Recipe
    from compress.testing import tiny_recipe_dict

    recipe = Recipe.model_validate(tiny_recipe_dict())
    return StageCache(Path("unused")).key(
        recipe.stages[0], "input", recipe, tiny_bundle(), strategy
    )


class TwoRanks(SingleProcess):
    world_size = 2

    def identity(self):
        return {"strategy": "ddp", "world_size": 2}


def test_a_stage_trained_on_ranks_never_reuses_a_one_process_result():
    # (replaces a test of SingleProcess's class defaults) the strategy's identity is
    # part of the stage cache key: a key that ignored it would hand a DDP run the
    # weights a one-process run trained, and the other way round
    one, again, ranks = (
        _cache_key(SingleProcess()),
        _cache_key(SingleProcess()),
        _cache_key(TwoRanks()),
    )

    assert one == again
    assert ranks != one
