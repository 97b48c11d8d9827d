"""Budgets as data: each budget key maps to a metric, a direction and a sentence.

A check returns a `BudgetCheck` whose message (value, limit, baseline) goes
verbatim into the report and the terminal. Only the runner calls these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from compress.recipe.schema import Budgets


@dataclass
class BudgetCheck:
    """The outcome of one budget on one model."""

    metric: str
    limit: float
    value: float | None
    passed: bool
    message: str
    baseline: float | None = None
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    """How to read a budget key: which metric, which direction, how to print it."""

    metric: str
    direction: str  # "max": value must be <= limit; "min": value must be >= limit
    read: Callable[[dict, dict | None], float | None]
    fmt: Callable[[float], str]
    baseline: Callable[[dict, dict | None], float | None] = lambda metrics, teacher: None


def _latency(metrics: dict, percentile: str) -> float | None:
    primary = metrics.get("primary_provider", "cpu")
    return metrics.get("latency", {}).get(primary, {}).get(percentile)


def _accuracy_drop(metrics: dict, teacher: dict | None) -> float | None:
    if teacher is None or metrics.get("accuracy") is None:
        return None
    return teacher["accuracy"] - metrics["accuracy"]


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _ms(value: float) -> str:
    return f"{value:.4g} ms"


def _count(value: float) -> str:
    return f"{int(value):,}"


RULES: dict[str, Rule] = {
    "accuracy_min": Rule("accuracy", "min", lambda m, t: m.get("accuracy"), _pct),
    "accuracy_drop_max": Rule(
        "accuracy_drop",
        "max",
        _accuracy_drop,
        lambda v: f"{v * 100:.2f} points",
        lambda m, t: t["accuracy"] if t else None,
    ),
    # fidelity to the baseline (the first stage's model): labels are not needed
    "agreement_min": Rule("agreement", "min", lambda m, t: m.get("agreement"), _pct),
    "latency_p50_ms_max": Rule("latency_p50_ms", "max", lambda m, t: _latency(m, "p50_ms"), _ms),
    "latency_p90_ms_max": Rule("latency_p90_ms", "max", lambda m, t: _latency(m, "p90_ms"), _ms),
    "throughput_min": Rule(
        "throughput",
        "min",
        lambda m, t: _latency(m, "throughput"),
        lambda v: f"{v:,.1f} items/s",
    ),
    "size_bytes_max": Rule("size_bytes", "max", lambda m, t: m.get("size_bytes"), _count),
    "params_max": Rule("params", "max", lambda m, t: m.get("params"), _count),
    "macs_max": Rule("macs", "max", lambda m, t: m.get("macs"), _count),
    "size_ratio_min": Rule(
        "size_ratio",
        "min",
        lambda m, t: m.get("size_ratio"),
        lambda v: f"{v:.2f}x",
        lambda m, t: t["size_bytes"] if t else None,
    ),
    # language models (causal-lm): perplexity relative to the baseline's, decode speed at
    # the generation profile
    "perplexity_increase_max": Rule(
        "perplexity_increase",
        "max",
        lambda m, t: m.get("perplexity_increase"),
        _pct,
        lambda m, t: t.get("perplexity") if t else None,
    ),
    "decode_tokens_per_s_min": Rule(
        "decode_tokens_per_s",
        "min",
        lambda m, t: m.get("decode_tokens_per_s"),
        lambda v: f"{v:,.1f} tokens/s",
    ),
    "speedup_min": Rule(
        "speedup",
        "min",
        lambda m, t: (m.get("speedup") or {}).get("median"),
        lambda v: f"{v:.2f}x",
        # the teacher's p50 from the same interleaved measurement as this model's
        lambda m, t: m.get("teacher_p50_ms_interleaved"),
    ),
    "speedup_vs_input_min": Rule(
        "speedup_vs_input",
        "min",
        lambda m, t: (m.get("speedup_vs_input") or {}).get("median"),
        lambda v: f"{v:.2f}x",
        # the input's p50 from the same interleaved measurement as this model's
        lambda m, t: m.get("input_p50_ms_interleaved"),
    ),
}


def profile_view(metrics: dict[str, Any], profile: str | None) -> dict[str, Any]:
    """`metrics` with latency and speed-ups read from one deployment profile (the top
    level holds the first profile's, so None or the first profile's name is `metrics`)."""
    profiles = metrics.get("profiles") or {}
    if profile is None or profile not in profiles:
        return metrics
    measured = profiles[profile]
    return {**metrics, **{key: measured[key] for key in PROFILE_KEYS if key in measured}}


# What a deployment profile measures on its own (the rest of the metrics are shared).
PROFILE_KEYS = (
    "latency",
    "speedup",
    "speedup_vs_input",
    "teacher_p50_ms_interleaved",
    "input_p50_ms_interleaved",
)


def check_budgets(
    budgets: Budgets, metrics: dict[str, Any], teacher: dict[str, Any] | None
) -> list[BudgetCheck]:
    """Check every set budget against a model's metrics.

    Args:
        budgets: the budgets to check; unset ones are skipped.
        metrics: the model's evaluation (accuracy, latency, size_bytes, ...).
        teacher: the teacher's metrics, the baseline of drops and speed-ups.

    Example:
        >>> check_budgets(Budgets(accuracy_min=0.9), {"accuracy": 0.8}, None)[0].passed
        False
    """
    checks = []
    metrics = profile_view(metrics, budgets.profile)
    for key, limit in budgets.limits().items():
        rule = RULES[key]
        value = rule.read(metrics, teacher)
        baseline = rule.baseline(metrics, teacher)
        unavailable = metrics.get("providers_unavailable", {})
        if (
            value is None
            and (rule.metric.startswith("latency") or rule.metric.startswith("speedup"))
            and metrics.get("primary_provider") in unavailable
        ):
            provider = metrics["primary_provider"]
            checks.append(
                BudgetCheck(
                    rule.metric,
                    limit,
                    None,
                    True,
                    f"{rule.metric} skipped: optional provider {provider} unavailable "
                    f"({unavailable[provider]})",
                    skipped=True,
                )
            )
            continue
        if value is None:
            checks.append(
                BudgetCheck(rule.metric, limit, None, False, f"{rule.metric} was not measured")
            )
            continue
        passed = value <= limit if rule.direction == "max" else value >= limit
        relation = (
            ("<=" if passed else ">") if rule.direction == "max" else (">=" if passed else "<")
        )
        bound = "max" if rule.direction == "max" else "min"
        message = f"{rule.metric} {rule.fmt(value)} {relation} {bound} {rule.fmt(limit)}"
        if rule.metric == "accuracy_drop" and baseline is not None:
            message += f" (teacher {_pct(baseline)} -> {_pct(metrics['accuracy'])})"
        elif rule.metric == "size_ratio" and baseline is not None:
            message += f" (teacher {int(baseline):,} bytes -> {int(metrics['size_bytes']):,})"
        elif rule.metric == "perplexity_increase" and baseline is not None:
            message += f" (baseline perplexity {baseline:.4g} -> {metrics['perplexity']:.4g})"
        elif rule.metric == "speedup" and baseline is not None:
            message += f" (teacher p50 {_ms(baseline)}, interleaved)"
        elif rule.metric == "speedup" and metrics.get("teacher_decode_tokens_per_s_interleaved"):
            rate = metrics["teacher_decode_tokens_per_s_interleaved"]
            message += f" (baseline {rate:,.1f} decode tokens/s, interleaved)"
        elif rule.metric == "speedup_vs_input" and baseline is not None:
            message += f" (input p50 {_ms(baseline)}, interleaved)"
        if budgets.profile is not None:
            message += f" [profile {budgets.profile}]"
        checks.append(BudgetCheck(rule.metric, limit, value, passed, message, baseline))
    return checks
