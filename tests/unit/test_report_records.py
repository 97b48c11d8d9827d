"""The typed run records: written with the keys they were given, read back typed,
rendered to HTML without passing raw HTML through."""

from __future__ import annotations

import json

import pytest

from compress.report.html import markdown_to_html
from compress.report.records import Metrics, Report, StageRecord
from compress.runner import run_plan

pytestmark = pytest.mark.unit


def test_an_error_record_is_written_with_exactly_its_keys():
    record = StageRecord(name="train", type="train", dir="train", status="error",
                         error="stage 'train': boom", warnings=[], duration_s=0.5)  # fmt: skip

    written = record.to_json()

    assert written == {
        "name": "train",
        "type": "train",
        "dir": "train",
        "status": "error",
        "error": "stage 'train': boom",
        "duration_s": 0.5,
        "warnings": [],
    }


def test_a_written_record_reads_back_equal_with_undeclared_keys_kept():
    metrics = {
        "accuracy": 0.9,
        "size_bytes": 1200,
        "primary_provider": "cpu",
        "latency": {
            "cpu": {
                "p50_ms": 1.5,
                "p90_ms": 2.0,
                "p99_ms": 2.5,
                "mean_ms": 1.6,
                "std_ms": 0.1,
                "n": 10,
                "future_key": [1, 2],
            }
        },
        "speedup": {"median": float("nan"), "min": 1.0, "max": 1.0, "rounds": 0},
    }
    record = {"name": "prune", "type": "prune", "dir": "prune", "status": "passed",
              "metrics": metrics, "details": {"steps": [], "own_fact": {"a": 1}}}  # fmt: skip

    typed = StageRecord.model_validate(record)
    again = json.loads(json.dumps(typed.to_json()))

    assert typed.metrics.primary_latency().p50_ms == 1.5
    assert again["metrics"]["latency"]["cpu"]["future_key"] == [1, 2]
    assert again["details"]["own_fact"] == {"a": 1}
    assert json.dumps(typed.to_json()["metrics"]["speedup"]["median"]) == "NaN"  # as before


def test_metrics_say_cpu_when_the_record_names_no_provider():
    assert Metrics().provider == "cpu" and Metrics().primary_latency() is None


def test_a_report_of_the_wrong_shape_names_the_key_path():
    with pytest.raises(ValueError, match=r"stages\.0\.metrics\.params"):
        Report.model_validate({
            "schema_version": 2, "compress_version": "0", "status": "passed",
            "recipe": {"name": "r"}, "finished_at": "t", "duration_s": 1.0,
            "environment": {}, "runtime": {"batch_size": 1, "threads": 1, "warmup": 1,
                                           "rounds": 1, "repeats": 1},
            "stages": [{"name": "a", "type": "train", "dir": "a", "status": "passed",
                        "metrics": {"params": {}}}],
        })  # fmt: skip


def test_report_html_escapes_raw_html_and_marks_failures():
    markdown = (
        "- train: **FAIL**: accuracy <b>low</b>\n- train: pass: ok\n\n"
        "| stage | status |\n|---|---|\n| a | failed |\n| b | passed |\n"
    )

    page = markdown_to_html(markdown)

    assert "<b>" not in page and "&lt;b&gt;low&lt;/b&gt;" in page
    assert page.count('class="fail"') == 2  # the failed budget and the failed stage's row
    assert '<tr class="fail">\n<td>a</td>' in page


def test_the_stage_loop_stops_after_the_named_stage_or_when_a_step_says_so():
    plan = [(None, "train"), (None, "distill"), (None, "prune")]
    seen = []

    run_plan(plan, lambda config, name, index: seen.append((name, index)) or True, "distill")
    run_plan(plan, lambda config, name, index: seen.append((name, index)) and False)

    assert seen == [("train", 1), ("distill", 2), ("train", 1)]
