"""Input signatures: named inputs with dtypes and dynamic axes, read by every consumer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.models.signature import InputSignature, as_feeds, as_signature, sample_count
from compress.runtime.evaluate import onnx_predictions
from compress.runtime.latency import measure_latency
from compress.runtime.onnx_export import check_parity, export_onnx

pytestmark = pytest.mark.unit

TEXT = InputSignature.from_dict(
    {
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"], "high": 50},
            {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]},
        ]
    }
)


class TinyEncoder(nn.Module):
    """Embedding + masked mean pool + linear: two int64 inputs, dynamic batch and length."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def test_an_image_signature_keeps_the_input_name_and_shape():
    signature = as_signature((1, 8, 8))

    assert signature.names == ["input"]
    assert signature.inputs[0].shape == ("batch", 1, 8, 8)
    assert signature.sample_shape == (1, 8, 8)
    assert signature.parity_sizes([1, 7]) == [{"batch": 1}, {"batch": 7}]
    assert signature.contract() == [
        {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}
    ]


def test_parity_shapes_vary_the_sequence_length_too():
    sizes = TEXT.parity_sizes([1, 3, 32])

    assert [s["batch"] for s in sizes] == [1, 3, 32]
    assert len({s["sequence"] for s in sizes}) == 3  # a different length at each


def test_random_examples_have_each_inputs_dtype_and_range():
    ids, mask = TEXT.random_example(TEXT.sizes(4, sequence=9), torch.Generator().manual_seed(0))

    assert ids.shape == mask.shape == (4, 9)
    assert ids.dtype == mask.dtype == torch.int64
    assert int(ids.max()) < 50 and set(mask.unique().tolist()) <= {0, 1}


def test_signature_round_trips_through_dict_and_onnx(tmp_path):
    path = export_onnx(TinyEncoder().eval(), TEXT, tmp_path / "encoder.onnx")

    assert InputSignature.from_dict(TEXT.to_dict()) == TEXT
    read = InputSignature.from_onnx(path)
    assert read.names == ["input_ids", "attention_mask"]
    assert [spec.dtype for spec in read.inputs] == ["int64", "int64"]
    assert read.inputs[0].shape[0] == "batch"
    assert isinstance(read.inputs[0].shape[1], str)  # the sequence axis stayed dynamic


def test_a_two_input_model_exports_with_parity_at_two_sequence_lengths(tmp_path):
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    path = export_onnx(model, TEXT, tmp_path / "encoder.onnx")

    report = check_parity(model, path, TEXT, [1, 3], atol=1e-5, rtol=1e-4)

    assert set(report) == {"batch_1_sequence_12_max_abs_diff", "batch_3_sequence_41_max_abs_diff"}
    assert max(report.values()) < 1e-5


def test_evaluation_and_latency_feed_every_named_input(tmp_path):
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    path = export_onnx(model, TEXT, tmp_path / "encoder.onnx")
    feeds = TEXT.random_feed(TEXT.sizes(10, sequence=20), seed=1)

    logits = onnx_predictions(path, feeds, batch_size=4)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(feeds[n]) for n in TEXT.names)).numpy()
    (stats,) = measure_latency([path], TEXT, batch_size=2, warmup=1, repeats=2, rounds=1)

    assert np.allclose(logits, expected, atol=1e-5)
    assert stats.batch_size == 2 and stats.n == 2


def test_one_array_feeds_a_one_input_model_and_is_refused_for_two():
    x = np.zeros((3, 4), np.float32)

    assert as_feeds(x, ["input"]) == {"input": x}
    assert sample_count({"a": x, "b": x}) == 3
    with pytest.raises(ValueError, match="one array given"):
        as_feeds(x, ["input_ids", "attention_mask"])
