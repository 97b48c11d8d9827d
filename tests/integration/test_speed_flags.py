"""A stage slower than its input is said where a person looks, and can be a gate."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from compress.testing import run_cli, tiny_recipe_dict, write_recipe

# interleaved latency ratios: the timing tests run one after another, on one xdist worker
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("timing")]

# A teacher of 4 channels, then a "student" ~50x its MACs: the distill stage's model is
# slower than its input (the teacher) by far more than any round-to-round drift.
SLOWER = tiny_recipe_dict(
    model={"architecture": "cnn", "widths": [4]},
    runtime={"rounds": 5, "repeats": 20},
    stages=[
        {"type": "train", "epochs": 1, "batch_size": 64},
        {
            "type": "distill",
            "epochs": 1,
            "batch_size": 64,
            "student": {"architecture": "cnn", "widths": [64, 128]},
        },
        {"type": "export"},
    ],
)


def test_the_slower_stage_is_flagged_in_console_report_markdown_and_junit(shared_run):
    # the shared run's distill stage: a student of ~50x its teacher's MACs
    run = shared_run.cli

    (failure,) = run.report["failures"]  # a flag, not a gate: only the params budget fails
    assert "params" in failure and "slower" not in failure
    distill = next(s for s in run.report["stages"] if s["name"] == "distill")
    (flag,) = distill["flags"]
    ratio = distill["metrics"]["speedup_vs_input"]
    assert flag["kind"] == "slower_than_input" and flag["input_stage"] == "train"
    assert ratio["max"] < 1.0 and ratio["rounds"] == 5
    assert "SLOWER" in run.output and "slower than its input" in run.output
    markdown = (shared_run.out / "report.md").read_text(encoding="utf-8")
    assert "## Slower than their input" in markdown and flag["message"] in markdown
    assert "slower than its input" in (shared_run.out / "report.html").read_text("utf-8")
    cases = ET.parse(shared_run.junit).getroot().iter("testcase")
    flagged = [c for c in cases if c.get("name") == "speed_vs_input"]
    by_stage = {c.get("classname").split(".")[-1]: c for c in flagged}
    assert by_stage["distill"].find("skipped").get("message") == flag["message"]


def test_stages_no_slower_than_their_input_carry_no_flag(shared_run):
    run = shared_run.cli

    export = next(s for s in run.report["stages"] if s["name"] == "export")
    train = run.report["stages"][0]

    assert export["flags"] == [] and train["flags"] == []
    # export copies its input's bytes: the same graph, measured as 1.0 exactly
    assert export["metrics"]["speedup_vs_input"]["median"] == 1.0
    assert "speedup_vs_input" not in train["metrics"]  # the first stage has no input


def test_speedup_vs_input_min_makes_the_slowdown_a_gate(tmp_path):
    recipe = {**SLOWER, "stages": [dict(s) for s in SLOWER["stages"]]}
    recipe["stages"][1]["budgets"] = {"speedup_vs_input_min": 0.9}
    path = write_recipe(tmp_path / "gate.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 1, run.output
    (check,) = next(s for s in run.report["stages"] if s["name"] == "distill")["budgets"]
    assert check["metric"] == "speedup_vs_input" and not check["passed"]
    assert "input p50" in check["message"]
