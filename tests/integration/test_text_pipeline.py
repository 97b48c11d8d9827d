"""A tiny random BERT and a tokenizer built in the test, through every stage of
`compress run`: fine-tune -> distill (a layer subset, logits + hidden-state KD) ->
prune (heads, FFN) -> dynamic int8 (MatMul + Gather) -> export. No download."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from compress.testing import run_cli  # noqa: E402
from compress.testing.text import tiny_bert_folder, write_reviews  # noqa: E402

pytestmark = pytest.mark.integration

RECIPE = """
name = "tiny-text"
seed = 0

[data]
source = "csv"
path = "{reviews}"
text_column = "text"
label_column = "category"
label_map = {{ fresh = 1, rotten = 0 }}
group_column = "movie_name"
max_length = 24

[model]
architecture = "hf-encoder"
path = "{bert}"

[runtime]
threads = 1

[[stages]]
type = "train"
epochs = 4
batch_size = 16
optimizer = {{ name = "adamw", lr = 0.003, weight_decay = 0.01 }}
schedule = {{ name = "warmup", warmup_fraction = 0.1 }}
grad_clip = 1.0

[[stages]]
type = "distill"
student = {{ architecture = "hf-encoder", layers = [0, 2] }}
feature_layers = [[1, 1], [2, 3]]
feature_weight = 0.5
epochs = 2
batch_size = 16
temperature = 2.0
alpha = 0.5
optimizer = {{ name = "adamw", lr = 0.002 }}
schedule = {{ name = "warmup", warmup_steps = 2 }}

[[stages]]
type = "prune"
head_ratio = 0.5
ffn_ratio = 0.5
finetune = {{ epochs = 1, batch_size = 16, optimizer = {{ name = "adamw", lr = 0.001 }} }}

[[stages]]
type = "quantize"
mode = "dynamic"
op_types = ["MatMul", "Gemm", "Gather"]

[[stages]]
type = "export"
"""


def test_every_stage_runs_on_a_tiny_bert_and_ships_the_tokenizer(tmp_path):
    bert = tiny_bert_folder(tmp_path / "bert", num_hidden_layers=3)
    reviews = write_reviews(tmp_path / "reviews.csv.bz2")
    recipe = tmp_path / "text.toml"
    recipe.write_text(RECIPE.format(reviews=reviews, bert=bert), encoding="utf-8")

    run = run_cli("run", recipe, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 0, run.output
    stages = {stage["type"]: stage for stage in run.report["stages"]}
    assert list(stages) == ["train", "distill", "prune", "quantize", "export"]
    train, distill = stages["train"], stages["distill"]
    assert train["metrics"]["accuracy"] > 0.7  # the words decide the label: learnable
    kd = distill["details"]["distillation"]
    assert kd["student_initialised_from"].startswith("teacher layers [0, 2]")
    assert kd["feature_layers"] == [[1, 1], [2, 3]]
    assert distill["metrics"]["params"] < train["metrics"]["params"]
    assert stages["prune"]["metrics"]["macs"] < distill["metrics"]["macs"]
    parity = stages["export"]["details"]["parity"]
    assert parity["int8_agreement_with_float"] >= 0.9
    assert stages["quantize"]["metrics"]["size_bytes"] < stages["prune"]["metrics"]["size_bytes"]

    final = tmp_path / "run" / "final"
    assert (final / "tokenizer.json").is_file()
    contract = json.loads((final / "model.contract.json").read_text(encoding="utf-8"))
    assert [i["name"] for i in contract["inputs"]] == ["input_ids", "attention_mask"]
    assert contract["preprocessing"]["tokenizer"] == "tokenizer.json"
    assert contract["preprocessing"]["max_length"] == 24
    assert contract["preprocessing"]["labels"] == ["rotten", "fresh"]

    # the contract is enough: tokenize new texts with the shipped file, run the shipped model
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(final / "tokenizer.json"))
    tokenizer.enable_truncation(contract["preprocessing"]["max_length"])
    texts = ["a brilliant and moving film", "dull boring plot", "superb warm cast"]
    encoded = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(len(e) for e in encoded)
    pad = contract["preprocessing"]["pad_id"]
    ids = np.array([e + [pad] * (width - len(e)) for e in encoded], dtype=np.int64)
    mask = np.array([[1] * len(e) + [0] * (width - len(e)) for e in encoded], dtype=np.int64)
    session = ort.InferenceSession(str(final / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert logits.shape == (3, 2) and np.isfinite(logits).all()
