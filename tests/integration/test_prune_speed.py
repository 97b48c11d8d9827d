"""Pruning timed on ONNX Runtime: a step known to be slower is flagged, a faster one not.

The flag is the product: a test that re-applied `is_slower` to the stage's own
figures would pass whatever the speed. So each test runs a model whose pruned form
is known to be slower (`compress.testing.speed`: pruning quadruples its ONNX nodes) or
known to be faster (a wide conv net at half its channels), and checks the flags.
"""

from __future__ import annotations

import pytest

from compress.testing import run_cli, tiny_recipe_dict, write_recipe

# interleaved latency ratios: the timing tests run one after another, on one xdist worker
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("timing")]


def _prune_run(tmp_path, model: dict, steps: int):
    # 200 repeats per round: these models run in 0.04-0.5 ms, and a round's p50 over 20
    # was ~1 ms of samples that one burst of the other xdist worker could move
    recipe = tiny_recipe_dict(
        model=model,
        runtime={"rounds": 5, "repeats": 200},
        stages=[
            {"type": "train", "epochs": 1, "batch_size": 64},
            {"type": "prune", "ratio": 0.5, "steps": steps, "finetune": {"epochs": 1}},
        ],
    )
    recipe["model"] = model  # replace, not merge: a user model takes no `widths`
    path = write_recipe(tmp_path / "prune.toml", recipe)
    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")
    assert run.returncode == 0, run.output
    return run, run.report["stages"][1]


def test_a_pruned_model_known_to_be_slower_is_flagged_against_its_input(tmp_path):
    model = {"architecture": "compress.testing.speed:slower_when_pruned"}

    run, prune = _prune_run(tmp_path, model, steps=1)

    assert prune["metrics"]["macs"] < run.report["stages"][0]["metrics"]["macs"]
    assert prune["metrics"]["speedup_vs_input"]["median"] < 0.9
    step = prune["details"]["steps"][1]
    assert step["slower_than_previous"] is True
    assert step["speedup_vs_previous"]["max"] < 1.0
    kinds = {flag["input_stage"] for flag in prune["flags"]}
    assert kinds == {"train", "pruning step 0"}  # the stage vs its input, the step vs step 0
    for flag in prune["flags"]:
        assert flag["message"] in run.output  # said on the console, not only in the report
    assert "(slower)" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")


def test_a_pruned_model_known_to_be_faster_is_not_flagged_and_every_step_is_timed(tmp_path):
    model = {"architecture": "cnn", "widths": [64, 128]}

    run, prune = _prune_run(tmp_path, model, steps=2)

    assert prune["flags"] == []
    assert prune["metrics"]["speedup_vs_input"]["median"] > 1.2
    steps = prune["details"]["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert all(s["step_p50_ms"] > 0 for s in steps)  # every step timed
    for step in steps[1:]:
        assert step["speedup_vs_previous"]["rounds"] == 5
        assert step["slower_than_previous"] is False
    markdown = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "vs previous" in markdown and "(slower)" not in markdown
