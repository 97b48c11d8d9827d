"""Pruning a user model we did not write: every step timed, a slower result flagged."""

from __future__ import annotations

import pytest

from compress.runtime.latency import is_slower
from compress.testing import run_cli, tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.integration


def test_depthwise_se_model_pruned_with_defaults_is_no_slower_or_flagged(tmp_path):
    recipe = tiny_recipe_dict(
        runtime={"rounds": 5, "repeats": 20},
        stages=[
            {"type": "train", "epochs": 1, "batch_size": 64},
            {"type": "prune", "ratio": 0.3, "steps": 2, "finetune": {"epochs": 1}},
        ],
    )
    recipe["model"] = {"architecture": "compress.testing.depthwise:depthwise_se_net"}
    path = write_recipe(tmp_path / "dw.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 0, run.output
    prune = run.report["stages"][1]
    ratio = prune["metrics"]["speedup_vs_input"]
    stage_flags = [f for f in prune["flags"] if f["input_stage"] == "train"]
    assert prune["metrics"]["macs"] < run.report["stages"][0]["metrics"]["macs"]
    assert bool(stage_flags) == is_slower(ratio)  # slower if and only if flagged
    if stage_flags:
        assert stage_flags[0]["message"] in run.output
    steps = prune["details"]["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert all(s["step_p50_ms"] > 0 for s in steps)  # every step timed
    for step in steps[1:]:
        assert step["speedup_vs_previous"]["rounds"] == 5
        assert step["slower_than_previous"] == is_slower(step["speedup_vs_previous"])
    markdown = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "vs previous" in markdown
