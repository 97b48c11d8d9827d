"""Deployment profiles: every (batch, threads) the model will be served at is measured."""

from __future__ import annotations

import json

import pytest

from compress.testing import run_cli, tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.integration


def test_each_profile_is_measured_gated_and_recorded_in_the_contract(tmp_path):
    recipe = tiny_recipe_dict(
        runtime={"profiles": [{"batch": 1, "threads": 1}, {"batch": 8, "threads": 2}]},
        budgets={"throughput_min": 1.0, "profile": "b8-t2"},
    )
    recipe["stages"][1]["budgets"] = {"throughput_min": 1e12}  # cannot hold: a gate
    path = write_recipe(tmp_path / "profiles.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 1, run.output  # the export stage's impossible throughput
    export = run.report["stages"][1]["metrics"]
    assert set(export["profiles"]) == {"b1-t1", "b8-t2"}
    wide = export["profiles"]["b8-t2"]
    assert (wide["batch"], wide["threads"]) == (8, 2)
    assert wide["latency"]["cpu"]["batch_size"] == 8 and wide["latency"]["cpu"]["threads"] == 2
    assert wide["latency"]["cpu"]["throughput"] > 0
    assert export["latency"] == export["profiles"]["b1-t1"]["latency"]  # the first is primary
    (stage_check,) = run.report["stages"][1]["budgets"]
    assert not stage_check["passed"] and stage_check["metric"] == "throughput"
    (final_check,) = run.report["final"]["budgets"]
    assert final_check["passed"] and "[profile b8-t2]" in final_check["message"]
    contract = json.loads((tmp_path / "run" / "final" / "model.contract.json").read_text())
    profiles = contract["measured"]["profiles"]
    assert [(p["name"], p["session_options"]["intra_op_num_threads"]) for p in profiles] == [
        ("b1-t1", 1),
        ("b8-t2", 2),
    ]
    markdown = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "## Deployment profiles" in markdown and "| export | b8-t2 | 8 | 2 |" in markdown
    assert run.report["schema_version"] == 2


def test_the_html_latency_plot_has_a_panel_per_provider_and_profile():
    from compress.report.html import _latency_panels
    from compress.report.records import StageRecord

    lat = {"p50_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.2, "mean_ms": 1.0, "std_ms": 0.1, "n": 5}
    head = {"name": "export", "type": "export", "dir": "export", "status": "passed"}
    profiles = {
        "b1-t1": {"batch": 1, "threads": 1, "latency": {"cpu": lat}},
        "b32-t2": {"batch": 32, "threads": 2, "latency": {"cpu": lat}},
    }
    stage = StageRecord(**head, metrics={"latency": {"cpu": lat}, "profiles": profiles})
    alone = StageRecord(**head, metrics={"latency": {"cpu": lat}})

    assert list(_latency_panels(stage)) == ["cpu, b1-t1", "cpu, b32-t2"]
    assert list(_latency_panels(alone)) == ["cpu"]
