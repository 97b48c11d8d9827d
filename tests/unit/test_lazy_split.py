"""Lazy splits: every whole-split consumer streams, and matches the in-memory path.

Peak memory is tested through its mechanism: a counting reader shows that nothing
ever asks for more than a chunk (or a training batch) of rows at once.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from compress.data import Split
from compress.recipe.schema import TrainingConfig
from compress.recipe.stages import DistillConfig
from compress.runtime.evaluate import onnx_accuracy, onnx_logits, onnx_predictions, split_samples
from compress.testing import TinyCNN, tiny_bundle
from compress.testing.images import CountingRows, as_lazy
from compress.training import evaluate, fit, inference, loop

pytestmark = pytest.mark.unit


def _model(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(num_classes=3)


def _lazy(split: Split, workers: int = 0) -> Split:
    return Split(None, split.y, reader=CountingRows(split.x, workers))


def test_a_split_needs_tensors_or_a_reader():
    with pytest.raises(TypeError, match="needs its tensors"):
        Split(None, torch.zeros(2, dtype=torch.int64))


def test_evaluation_never_reads_more_than_a_chunk():
    memory = tiny_bundle(per_class=(8, 370, 8)).val  # 1,110 rows
    lazy = _lazy(memory)
    model = _model()

    streamed, reference = evaluate(model, lazy), evaluate(model, memory)

    assert lazy.reader.reads == [512, 512, 86]  # each row once, a chunk at a time
    assert streamed == reference  # the same batches: the same numbers


def test_workers_decode_the_same_rows_in_order():
    memory = tiny_bundle().train
    lazy = _lazy(memory, workers=1)

    chunks = list(lazy.chunks(10))

    assert torch.equal(torch.cat([x[0] for x, _ in chunks]), memory.x)
    assert torch.equal(torch.cat([y for _, y in chunks]), memory.y)
    assert torch.equal(lazy.inputs[0], memory.x)  # `inputs` materializes: small splits only


def test_split_samples_max_rows_decodes_only_those_rows():
    memory = tiny_bundle().test
    lazy = _lazy(memory)

    first = split_samples(lazy, max_rows=5)

    assert lazy.reader.reads == [5]
    assert np.array_equal(first, memory.x[:5].numpy())
    assert np.array_equal(split_samples(memory), memory.x.numpy())  # unchanged in memory


def test_onnx_logits_stream_and_match_the_in_memory_path(tmp_path):
    from compress.models.signature import InputSignature
    from compress.runtime.onnx_export import export_onnx

    memory = tiny_bundle(per_class=(8, 200, 8)).val  # 600 rows
    lazy = _lazy(memory)
    signature = InputSignature.image((1, 8, 8))
    path = export_onnx(_model().eval(), signature, tmp_path / "m.onnx")

    streamed = onnx_logits(path, lazy, signature)

    assert lazy.reader.reads == [256, 256, 88]
    assert np.array_equal(streamed, onnx_predictions(path, split_samples(memory, signature)))
    assert onnx_accuracy(path, lazy, signature) == onnx_accuracy(path, memory, signature)
    unlabeled = Split(memory.x, torch.full_like(memory.y, -1), labeled=False)
    assert onnx_accuracy(path, unlabeled, signature) is None


@pytest.mark.parametrize("augment", ["none", "crop-flip"])
def test_training_on_a_lazy_split_is_bit_identical(augment):
    data = tiny_bundle()
    lazy = as_lazy(data)
    config = TrainingConfig(epochs=2, batch_size=16)
    memory_model, lazy_model = _model(), _model()

    expected = fit(memory_model, data, config, seed=0, augment=augment)
    result = fit(lazy_model, lazy, config, seed=0, augment=augment)

    assert result.history == expected.history
    for name, tensor in memory_model.state_dict().items():
        assert torch.equal(lazy_model.state_dict()[name], tensor), name
    assert max(lazy.train.reader.reads) == 16  # one training batch at a time


def test_distill_on_a_lazy_split_computes_teacher_logits_in_chunks(monkeypatch):
    monkeypatch.setattr(loop, "teacher_logits_memo", inference.TeacherLogits())
    data = tiny_bundle(per_class=(400, 8, 8))  # 1,200 training rows
    lazy = as_lazy(data)
    teacher = _model(seed=1).eval()
    # no closing BatchNorm recalibration: its reads would follow the epoch's
    config = TrainingConfig(epochs=1, batch_size=600, batch_norm={"recalibrate": False})
    distill = DistillConfig()
    memory_student, lazy_student = _model(), _model()

    fit(memory_student, data, config, seed=0, teacher=teacher, distill=distill)
    monkeypatch.setattr(loop, "teacher_logits_memo", inference.TeacherLogits())
    fit(lazy_student, lazy, config, seed=0, teacher=copy.deepcopy(teacher), distill=distill)

    reads = lazy.train.reader.reads
    assert reads[:3] == [512, 512, 176]  # the teacher's logits, a chunk at a time
    assert reads[3:] == [600, 600]  # then the epoch's two batches
    for name, tensor in memory_student.state_dict().items():
        assert torch.allclose(lazy_student.state_dict()[name], tensor, atol=1e-6), name
