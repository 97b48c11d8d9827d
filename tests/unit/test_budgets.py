"""Budget checks: each key passes and fails with its value and limit in the message."""

from __future__ import annotations

import math

import pytest

from compress.budgets import RULES, check_budgets
from compress.recipe.schema import Budgets

pytestmark = pytest.mark.unit


def _metrics(**values):
    """Evaluation metrics shaped like the runner's, overridable per test."""
    metrics = {
        "accuracy": 0.9,
        "size_bytes": 12_345,
        "size_ratio": 4.0,
        "params": 1_442,
        "macs": 23_200,
        "primary_provider": "cpu",
        "latency": {"cpu": {"p50_ms": 1.5, "p90_ms": 2.25}},
        "speedup": {"median": 1.5, "min": 1.0, "max": 2.5, "rounds": 3},
    }
    metrics.update(values)
    return metrics


TEACHER = _metrics(
    accuracy=0.95, size_bytes=49_380, latency={"cpu": {"p50_ms": 3.0, "p90_ms": 4.0}}
)


def _one(budgets: Budgets, metrics: dict, teacher: dict | None = TEACHER):
    (check,) = check_budgets(budgets, metrics, teacher)
    return check


# Each case: budget key, a passing limit with its message, a failing limit with its message.
CASES = [
    (
        "accuracy_min",
        0.85,
        "accuracy 90.00% >= min 85.00%",
        0.95,
        "accuracy 90.00% < min 95.00%",
        0.9,
    ),
    (
        "latency_p50_ms_max",
        2.0,
        "latency_p50_ms 1.5 ms <= max 2 ms",
        1.25,
        "latency_p50_ms 1.5 ms > max 1.25 ms",
        1.5,
    ),
    (
        "latency_p90_ms_max",
        3.0,
        "latency_p90_ms 2.25 ms <= max 3 ms",
        2.0,
        "latency_p90_ms 2.25 ms > max 2 ms",
        2.25,
    ),
    (
        "size_bytes_max",
        20_000,
        "size_bytes 12,345 <= max 20,000",
        10_000,
        "size_bytes 12,345 > max 10,000",
        12_345,
    ),
    (
        "size_ratio_min",
        3.0,
        "size_ratio 4.00x >= min 3.00x (teacher 49,380 bytes -> 12,345)",
        5.0,
        "size_ratio 4.00x < min 5.00x (teacher 49,380 bytes -> 12,345)",
        4.0,
    ),
    ("params_max", 2_000, "params 1,442 <= max 2,000", 1_000, "params 1,442 > max 1,000", 1_442),
    ("macs_max", 30_000, "macs 23,200 <= max 30,000", 20_000, "macs 23,200 > max 20,000", 23_200),
]


@pytest.mark.parametrize(("key", "ok", "ok_message", "bad", "bad_message", "value"), CASES)
def test_budget_passes_with_value_and_limit(key, ok, ok_message, bad, bad_message, value):
    check = _one(Budgets(**{key: ok}), _metrics())

    assert check.passed is True
    assert check.message == ok_message
    assert check.value == value
    assert check.limit == ok


@pytest.mark.parametrize(("key", "ok", "ok_message", "bad", "bad_message", "value"), CASES)
def test_budget_fails_with_value_and_limit(key, ok, ok_message, bad, bad_message, value):
    check = _one(Budgets(**{key: bad}), _metrics())

    assert check.passed is False
    assert check.message == bad_message
    assert check.value == value
    assert check.limit == bad


@pytest.mark.parametrize(
    ("key", "limit"),
    [
        ("accuracy_min", 0.9),
        ("latency_p50_ms_max", 1.5),
        ("size_bytes_max", 12_345),
        ("speedup_min", 1.5),
    ],
)
def test_value_equal_to_limit_passes(key, limit):
    check = _one(Budgets(**{key: limit}), _metrics())

    assert check.passed is True


def test_accuracy_drop_is_measured_against_the_teacher():
    check = _one(Budgets(accuracy_drop_max=0.02), _metrics(accuracy=0.9))

    assert check.passed is False
    assert check.metric == "accuracy_drop"
    assert check.value == pytest.approx(0.05)
    assert check.baseline == 0.95
    assert check.message == "accuracy_drop 5.00 points > max 2.00 points (teacher 95.00% -> 90.00%)"


def test_accuracy_drop_within_limit_passes():
    check = _one(Budgets(accuracy_drop_max=0.02), _metrics(accuracy=0.94))

    assert check.passed is True
    assert check.message == (
        "accuracy_drop 1.00 points <= max 2.00 points (teacher 95.00% -> 94.00%)"
    )


def test_accuracy_gain_over_teacher_passes_a_drop_budget():
    check = _one(Budgets(accuracy_drop_max=0.0), _metrics(accuracy=0.97))

    assert check.passed is True
    assert check.value == pytest.approx(-0.02)


def test_accuracy_drop_without_teacher_fails_as_unmeasured():
    check = _one(Budgets(accuracy_drop_max=0.02), _metrics(), teacher=None)

    assert check.passed is False
    assert check.value is None
    assert check.message == "accuracy_drop was not measured"


def test_speedup_reads_the_median_of_interleaved_ratios():
    metrics = _metrics(
        speedup={"median": 1.5, "min": 1.0, "max": 2.5, "rounds": 5},
        teacher_p50_ms_interleaved=2.5,
    )

    failing = _one(Budgets(speedup_min=2.0), metrics)  # max would pass
    passing = _one(Budgets(speedup_min=1.2), metrics)  # min would fail

    assert (failing.passed, failing.value) == (False, 1.5)
    assert (passing.passed, passing.value) == (True, 1.5)
    # the baseline is the teacher's p50 from the same interleaved measurement
    assert failing.message == "speedup 1.50x < min 2.00x (teacher p50 2.5 ms, interleaved)"
    assert passing.message == "speedup 1.50x >= min 1.20x (teacher p50 2.5 ms, interleaved)"
    assert failing.baseline == 2.5


def test_speedup_of_nan_fails():
    metrics = _metrics(speedup={"median": math.nan, "min": math.nan, "max": math.nan, "rounds": 0})

    check = _one(Budgets(speedup_min=1.0), metrics)

    assert check.passed is False


def test_latency_is_read_from_the_primary_provider():
    metrics = _metrics(
        primary_provider="cuda",
        latency={"cpu": {"p50_ms": 1.5, "p90_ms": 2.0}, "cuda": {"p50_ms": 0.25, "p90_ms": 0.5}},
    )

    check = _one(Budgets(latency_p50_ms_max=1.0), metrics)

    assert check.passed is True
    assert check.value == 0.25


@pytest.mark.parametrize("key", sorted(RULES))
def test_missing_metric_fails_rather_than_passes(key):
    limit = 0.5 if key in ("accuracy_min", "accuracy_drop_max") else 1.0
    metric = RULES[key].metric

    check = _one(Budgets(**{key: limit}), {}, teacher=TEACHER)

    assert check.passed is False
    assert check.value is None
    assert check.limit == limit
    assert check.message == f"{metric} was not measured"


def test_unset_budgets_are_not_checked():
    assert check_budgets(Budgets(), _metrics(), TEACHER) == []


def test_every_set_budget_is_checked_in_field_order():
    budgets = Budgets(accuracy_min=0.5, params_max=10, speedup_min=1.0)

    checks = check_budgets(budgets, _metrics(), TEACHER)

    assert [(c.metric, c.passed) for c in checks] == [
        ("accuracy", True),
        ("params", False),
        ("speedup", True),
    ]


def test_every_budget_field_has_a_rule():
    assert set(Budgets.model_fields) - {"profile"} == set(RULES)  # profile: where to read


def test_check_serialises_for_the_report():
    check = _one(Budgets(params_max=1_000), _metrics())

    assert check.to_dict() == {
        "metric": "params",
        "limit": 1_000,
        "value": 1_442,
        "passed": False,
        "message": "params 1,442 > max 1,000",
        "baseline": None,
        "skipped": False,
    }


# --------------------------------------------------------------------------- profiles


def _profiled_metrics() -> dict:
    def measured(p50: float, batch: int, vs_teacher: float) -> dict:
        latency = {"cpu": {"p50_ms": p50, "p90_ms": p50, "throughput": batch * 1000 / p50}}
        speed = {"median": vs_teacher, "min": vs_teacher, "max": vs_teacher, "rounds": 3}
        return {"batch": batch, "threads": 1, "latency": latency, "speedup": speed}

    first, second = measured(2.0, 1, 3.0), measured(40.0, 32, 1.5)
    return {
        "accuracy": 0.9,
        "primary_provider": "cpu",
        "latency": first["latency"],
        "speedup": first["speedup"],
        "profiles": {"b1-t1": first, "b32-t1": second},
    }


def test_budgets_read_the_profile_they_name_and_the_first_by_default():
    metrics = _profiled_metrics()

    (default,) = check_budgets(Budgets(throughput_min=600), metrics, None)
    (named,) = check_budgets(Budgets(throughput_min=600, profile="b32-t1"), metrics, None)
    (speed,) = check_budgets(Budgets(speedup_min=2.0, profile="b32-t1"), metrics, None)

    assert default.value == pytest.approx(500.0) and not default.passed  # 1 item / 2 ms
    assert named.value == pytest.approx(800.0) and named.passed  # 32 items / 40 ms
    assert "[profile b32-t1]" in named.message
    assert speed.value == 1.5 and not speed.passed


def test_a_budget_naming_an_unknown_profile_is_a_recipe_error():
    from compress.errors import RecipeError
    from compress.recipe.loader import validate_recipe
    from compress.testing import tiny_recipe_dict

    recipe = tiny_recipe_dict(
        runtime={"profiles": [{"batch": 1}, {"batch": 32, "threads": 2}]},
        budgets={"throughput_min": 10, "profile": "b64-t2"},
    )

    with pytest.raises(RecipeError, match=r"budgets.profile: 'b64-t2' is not a runtime profile"):
        validate_recipe(recipe, "t.toml")
    recipe["budgets"]["profile"] = "b32-t2"
    assert validate_recipe(recipe, "t.toml").budgets.profile == "b32-t2"
