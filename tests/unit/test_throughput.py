"""Throughput at a named batch: timed on real test rows padded per batch, each profile
with its own repeats, read by the throughput and speed-up budgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.budgets import check_budgets
from compress.recipe.schema import Budgets
from compress.recipe.schema.runtime import ProfileConfig, RuntimeConfig
from compress.runtime.latency import measure_latency, measure_with_runtime, real_batches

pytestmark = pytest.mark.unit

NAMES = ["input_ids", "attention_mask"]


def _padded_rows(lengths: list[int], width: int = 30) -> dict[str, np.ndarray]:
    ids = np.zeros((len(lengths), width), np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(1, length + 1) + 100 * row
    return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}


def test_real_batches_are_padded_to_their_own_longest_row():
    samples = _padded_rows([3, 5, 12, 4, 2, 7, 9, 6])

    batches = real_batches(samples, NAMES, batch_size=2, seed=0)

    assert len(batches) == 4
    seen = []
    for batch in batches:
        mask = batch["attention_mask"]
        assert batch["input_ids"].shape == mask.shape and mask.shape[0] == 2
        assert mask[:, -1].any()  # the last column is some row's token: no extra padding
        assert mask.shape[1] == mask.sum(1).max()
        seen += [int(row[0]) // 100 for row in batch["input_ids"]]
    assert sorted(seen) == list(range(8))  # every row once: drawn without replacement


def test_real_batches_repeat_rows_only_when_there_are_too_few():
    samples = _padded_rows([3, 5, 4])

    (batch,) = real_batches(samples, NAMES, batch_size=8, seed=1)

    assert batch["input_ids"].shape == (8, 5)
    assert real_batches(samples, NAMES, batch_size=1, seed=1, count=2)[0]["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="no samples"):
        real_batches(_padded_rows([]), NAMES, batch_size=2)


def test_an_image_input_is_left_as_it_is():
    images = np.random.default_rng(0).standard_normal((10, 1, 4, 4)).astype(np.float32)

    batches = real_batches(images, ["input"], batch_size=4)

    assert len(batches) == 2 and batches[0]["input"].shape == (4, 1, 4, 4)
    assert any(np.array_equal(batches[0]["input"][0], image) for image in images)


class _MeanOfTokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(2000, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    from compress.models.signature import InputSignature, TensorSpec
    from compress.runtime.onnx_export import export_onnx

    signature = InputSignature(
        (
            TensorSpec("input_ids", "int64", ("batch", "sequence"), 2000),
            TensorSpec("attention_mask", "int64", ("batch", "sequence"), 2),
        )
    )
    torch.manual_seed(0)
    path = export_onnx(_MeanOfTokens(), signature, tmp_path_factory.mktemp("tok") / "m.onnx")
    return path, signature


def test_measurement_runs_on_real_batches_with_the_profile_repeats(token_model, monkeypatch):
    import compress.runtime.latency as latency

    path, signature = token_model
    shapes = []
    real_run = latency.make_session

    def recording_session(*args, **kwargs):
        session = real_run(*args, **kwargs)

        class Recorder:
            def get_inputs(self):
                return session.get_inputs()

            def run(self, outputs, feed):
                shapes.append(feed["input_ids"].shape)
                return session.run(outputs, feed)

        return Recorder()

    monkeypatch.setattr(latency, "make_session", recording_session)
    runtime = RuntimeConfig(warmup=0, repeats=50, rounds=5,
                            profiles=[{"batch": 4, "repeats": 6, "rounds": 2}])  # fmt: skip
    samples = _padded_rows([3, 5, 12, 4, 2, 7, 9, 6, 11, 8, 10, 1])

    (stats,) = measure_with_runtime(
        [path], signature, runtime, profile=runtime.profiles[0], samples=samples
    )

    assert stats.n == 12 and len(stats.round_p50_ms) == 2  # the profile's 6 x 2, not 50 x 5
    assert {shape[0] for shape in shapes} == {4}
    assert len({shape[1] for shape in shapes}) > 1  # 3 batches, each its own width
    assert max(shape[1] for shape in shapes) <= 12
    assert stats.throughput == pytest.approx(4 * 1000.0 / stats.p50_ms)
    spread = stats.to_dict()["throughput_rounds"]
    assert spread["min"] <= spread["max"] and spread["min"] > 0


def test_random_inputs_remain_without_samples(token_model):
    path, signature = token_model

    (stats,) = measure_latency([path], signature, batch_size=3, warmup=1, repeats=2, rounds=2)

    assert stats.batch_size == 3 and stats.n == 4


def test_throughput_and_speedup_budgets_read_the_named_batch():
    metrics = {
        "primary_provider": "cpu",
        "latency": {"cpu": {"p50_ms": 1.0, "throughput": 1000.0}},
        "speedup": {"median": 1.5},
        "profiles": {
            "b1-t1": {"latency": {"cpu": {"p50_ms": 1.0, "throughput": 1000.0}},
                      "speedup": {"median": 1.5}},
            "b32": {"latency": {"cpu": {"p50_ms": 4.0, "throughput": 8000.0}},
                    "speedup": {"median": 5.2}, "teacher_p50_ms_interleaved": 20.8},
        },
    }  # fmt: skip

    at_b32 = check_budgets(
        Budgets(throughput_min=5000, speedup_min=5.0, profile="b32"), metrics, None
    )
    at_b1 = check_budgets(Budgets(throughput_min=5000, speedup_min=5.0), metrics, None)

    assert [c.passed for c in at_b32] == [True, True]
    assert "[profile b32]" in at_b32[1].message and "20.8 ms" in at_b32[1].message
    assert [c.passed for c in at_b1] == [False, False]


def test_a_profile_named_for_its_batch():
    assert ProfileConfig(batch=32, threads=1).label == "b32-t1"
    assert ProfileConfig(batch=32, name="b32").label == "b32"
    with pytest.raises(ValueError):
        ProfileConfig(batch=32, repeats=0)


def test_every_stage_is_timed_on_the_test_split(tmp_path, monkeypatch):
    import compress.runtime.latency as latency
    from compress.pipeline.measure import Measurement, deployable_onnx
    from compress.stages.base import StageResult
    from compress.testing import tiny_run_context

    drawn = []
    real = latency.real_batches

    def recording(samples, *args, **kwargs):
        drawn.append(samples)
        return real(samples, *args, **kwargs)

    monkeypatch.setattr(latency, "real_batches", recording)
    ctx = tiny_run_context(tmp_path, recipe={"runtime": {"warmup": 0, "repeats": 2, "rounds": 2,
                           "profiles": [{"batch": 1}, {"batch": 4, "repeats": 3}]}})  # fmt: skip
    result = StageResult(ctx.model, ctx.spec)
    path = deployable_onnx(result, tmp_path, seed=0, debug=False)

    metrics = Measurement(ctx.recipe, {}).evaluate(result, path, tmp_path, ctx)

    assert len(drawn) == 2  # one measurement per profile
    assert all(np.array_equal(x["input"], ctx.data.test.x.numpy()) for x in drawn)
    wide = metrics.profiles["b4-t1"].latency["cpu"]
    assert wide.batch_size == 4 and wide.n == 6
    assert metrics.latency["cpu"].n == 4
