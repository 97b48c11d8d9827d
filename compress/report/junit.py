"""JUnit XML: one test case per budget (and per stage error), so CI systems list them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from compress.artifacts import atomic_write_bytes
from compress.report.records import BudgetResult, Report, StageRecord


def _case(report: Report, owner: str, name: str) -> ET.Element:
    return ET.Element("testcase", classname=f"{report.recipe.name}.{owner}", name=name)


def _speed_case(report: Report, stage: StageRecord) -> ET.Element:
    """A stage that was slower than its input. A slowdown no budget gates is a warning,
    not a failure (the run's exit code says it passed): a skipped case with the figures,
    which CI test views show apart from the passes."""
    case = _case(report, stage.name, "speed_vs_input")
    ratio = stage.metrics.speedup_vs_input if stage.metrics is not None else None
    if ratio is not None:
        out = ET.SubElement(case, "system-out")
        out.text = f"{ratio.median:.2f}x vs input ({ratio.min:.2f}-{ratio.max:.2f})"
    for flag in stage.flags:
        ET.SubElement(case, "skipped", message=flag.message, type=flag.kind)
    return case


def _budget_case(report: Report, owner: str, result: BudgetResult) -> ET.Element:
    case = _case(report, owner, result.metric)
    if not result.passed:
        failure = ET.SubElement(case, "failure", message=result.message, type="budget")
        failure.text = result.message
    return case


def _stage_cases(report: Report, stage: StageRecord) -> list[ET.Element]:
    cases = [_budget_case(report, stage.name, result) for result in stage.budgets]
    if stage.flags:  # slower than its input: say so
        cases.append(_speed_case(report, stage))
    if stage.status == "error":
        case = _case(report, stage.name, "stage")
        message = stage.error or "error"
        error = ET.SubElement(case, "error", message=message, type="stage")
        error.text = message
        cases.append(case)
    return cases


def render_junit(report: Report) -> bytes:
    """A <testsuites> document: suite per run, case per budget check or stage error.

    Example:
        >>> xml = render_junit(read_report(Path("runs/digits")))  # doctest: +SKIP
    """
    cases = [case for stage in report.stages for case in _stage_cases(report, stage)]
    final = report.final.budgets if report.final is not None else []
    cases += [_budget_case(report, "final", result) for result in final]
    if report.error is not None and report.error.stage is None:
        case = ET.Element("testcase", classname=report.recipe.name, name="setup")
        ET.SubElement(case, "error", message=report.error.message, type="setup")
        cases.append(case)
    counts = {
        kind: str(sum(1 for case in cases if case.find(kind) is not None))
        for kind in ("failure", "error", "skipped")
    }
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"compress.{report.recipe.name}",
        tests=str(len(cases)),
        failures=counts["failure"],
        errors=counts["error"],
        skipped=counts["skipped"],
        time=f"{report.duration_s:.1f}",
    )
    suite.extend(cases)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def write_junit(report: Report, path: str | Path) -> None:
    """Write `render_junit(report)` to `path` atomically."""
    atomic_write_bytes(path, render_junit(report))
