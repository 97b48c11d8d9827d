"""What a run is in MLflow's terms: flat parameters, numeric metrics and string tags.

Pure functions over what the runner already produces (the resolved recipe, the stage
records and report.json); nothing here talks to a server.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from compress.report.records import Metrics, Report

PARAM_VALUE_MAX = 6000  # MLflow refuses longer parameter values
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def safe_key(key: str) -> str:
    """A metric/param/tag key MLflow accepts: letters, digits, `_-. /` only.

    Example:
        >>> safe_key("stages[0].optimizer.lr")
        'stages.0.optimizer.lr'
    """
    key = re.sub(r"\[(\d+)\]", r".\1", key)
    return _KEY_UNSAFE.sub("_", key)[:250]


def flatten_params(tree: Any, prefix: str = "") -> dict[str, str]:
    """Key paths of a nested dict/list -> string values (MLflow parameters).

    Lists of scalars stay one value (`model.widths = [32, 64]`); lists of tables are
    indexed (`stages.0.type`).

    Example:
        >>> flatten_params({"model": {"widths": [8, 16]}, "stages": [{"type": "train"}]})
        {'model.widths': '[8, 16]', 'stages.0.type': 'train'}
    """
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten_params(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(tree, list) and any(isinstance(item, (dict, list)) for item in tree):
        for index, value in enumerate(tree):
            out.update(flatten_params(value, f"{prefix}.{index}" if prefix else str(index)))
    elif tree is not None:
        text = tree if isinstance(tree, str) else json.dumps(tree)
        out[safe_key(prefix)] = text[:PARAM_VALUE_MAX]
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def stage_metrics(metrics: Metrics) -> dict[str, float]:
    """The numbers of one stage's metrics worth charting, by stable name.

    accuracy, size, params, MACs, size ratio, accuracy change; p50/p90 per provider
    (`latency.cpu.p50_ms`) and per deployment profile (`profile.b1-t1.cpu.p50_ms`);
    the speed-ups (median of interleaved rounds) vs the baseline and vs the input.

    Example:
        >>> latency = {"cpu": {"p50_ms": 1.5, "p90_ms": 2, "p99_ms": 2, "mean_ms": 1.6,
        ...                    "std_ms": 0.1, "n": 10}}
        >>> stage_metrics(Metrics(accuracy=0.9, latency=latency))
        {'accuracy': 0.9, 'latency.cpu.p50_ms': 1.5, 'latency.cpu.p90_ms': 2.0}
    """
    out: dict[str, float] = {}
    for key in ("accuracy", "size_bytes", "size_compressed_bytes", "params", "macs",
                "size_ratio", "accuracy_change"):  # fmt: skip
        if (value := _number(getattr(metrics, key))) is not None:
            out[key] = value
    panels = [("latency", metrics.latency)]
    panels += [(f"profile.{label}", entry.latency) for label, entry in metrics.profiles.items()]
    for prefix, latency in panels:
        for provider, stats in latency.items():
            for field in ("p50_ms", "p90_ms"):
                if (value := _number(getattr(stats, field))) is not None:
                    out[safe_key(f"{prefix}.{provider}.{field}")] = value
    for key in ("speedup", "speedup_vs_input"):
        ratio = getattr(metrics, key)
        if ratio is not None and ratio.rounds and (value := _number(ratio.median)) is not None:
            out[key] = value
    return out


def budget_tags(report: Report) -> dict[str, str]:
    """`budget.<stage>.<metric>` = pass | fail | skipped, and `.message` with the
    check's words. The final model's budgets are under the stage name `final`.

    Example:
        >>> tags = budget_tags(report)  # doctest: +SKIP
        >>> tags["budget.train.accuracy"]  # doctest: +SKIP
        'pass'
    """
    tags: dict[str, str] = {}
    sources = [(stage.name, stage.budgets) for stage in report.stages]
    sources.append(("final", report.final.budgets if report.final is not None else []))
    for stage, results in sources:
        for result in results:
            key = safe_key(f"budget.{stage}.{result.metric}")
            if result.skipped:
                tags[key] = "skipped"
            else:
                tags[key] = "pass" if result.passed else "fail"
            tags[f"{key}.message"] = result.message[:5000]
    return tags


def environment_tags(environment: dict[str, Any], version: str) -> dict[str, str]:
    """compress version, CPU, ISA flags and the library versions as tags."""
    tags = {"compress.version": version}
    for key in ("cpu", "cpu_count", "platform", "python", "torch", "onnxruntime", "onnx"):
        if environment.get(key) is not None:
            tags[f"compress.{key}"] = str(environment[key])
    tags["compress.isa"] = ",".join(environment.get("isa") or []) or "none"
    return tags
