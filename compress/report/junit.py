"""JUnit XML: one test case per budget (and per stage error), so CI systems list them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_write_bytes


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
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"compress.{report['recipe']['name']}",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        time=f"{report.get('duration_s', 0):.1f}",
    )
    suite.extend(cases)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def write_junit(report: dict[str, Any], path: str | Path) -> None:
    """Write `render_junit(report)` to `path` atomically."""
    atomic_write_bytes(path, render_junit(report))
