"""JUnit XML: one test case per budget (and per stage error), so CI systems list them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_write_bytes


def _speed_case(report: dict[str, Any], owner: str, stage: dict[str, Any]) -> ET.Element:
    """A stage that was slower than its input. A slowdown no budget gates is a warning,
    not a failure (the run's exit code says it passed): a skipped case with the figures,
    which CI test views show apart from the passes."""
    ratio = stage["metrics"]["speedup_vs_input"]
    case = ET.Element(
        "testcase", classname=f"{report['recipe']['name']}.{owner}", name="speed_vs_input"
    )
    out = ET.SubElement(case, "system-out")
    out.text = f"{ratio['median']:.2f}x vs input ({ratio['min']:.2f}-{ratio['max']:.2f})"
    for flag in stage.get("flags", []):
        ET.SubElement(case, "skipped", message=flag["message"], type=flag["kind"])
    return case


def render_junit(report: dict[str, Any]) -> bytes:
    """A <testsuites> document: suite per run, case per budget check or stage error."""
    cases: list[ET.Element] = []
    owners = [(stage["name"], stage.get("budgets", []), stage) for stage in report["stages"]]
    owners.append(("final", (report.get("final") or {}).get("budgets", []), None))
    for owner, checks, stage in owners:
        for check in checks:
            case = ET.Element(
                "testcase", classname=f"{report['recipe']['name']}.{owner}", name=check["metric"]
            )
            if not check["passed"]:
                failure = ET.SubElement(case, "failure", message=check["message"], type="budget")
                failure.text = check["message"]
            cases.append(case)
        if stage is not None and stage.get("flags"):  # slower than its input: say so
            cases.append(_speed_case(report, owner, stage))
        if stage is not None and stage["status"] == "error":
            case = ET.Element(
                "testcase", classname=f"{report['recipe']['name']}.{owner}", name="stage"
            )
            error = ET.SubElement(case, "error", message=stage["error"], type="stage")
            error.text = stage["error"]
            cases.append(case)
    if report.get("error") and report["error"].get("stage") is None:
        case = ET.Element("testcase", classname=report["recipe"]["name"], name="setup")
        ET.SubElement(case, "error", message=report["error"]["message"], type="setup")
        cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    errors = sum(1 for c in cases if c.find("error") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"compress.{report['recipe']['name']}",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{report.get('duration_s', 0):.1f}",
    )
    suite.extend(cases)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def write_junit(report: dict[str, Any], path: str | Path) -> None:
    """Write `render_junit(report)` to `path` atomically."""
    atomic_write_bytes(path, render_junit(report))
