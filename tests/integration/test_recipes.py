"""Every recipe in recipes/ validates, and runs end to end when shrunk with --set overrides."""

from __future__ import annotations

import glob
import importlib.util
import tomllib
from pathlib import Path

import pytest

from compress.budgets import RULES
from compress.data.sources import FASHION_MNIST_DIR
from compress.recipe import load_recipe
from compress.testing import run_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))
IDS = [path.name for path in RECIPES]


def _raw(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _needs_fashion_mnist(path: Path) -> bool:
    return _raw(path).get("data", {}).get("source") == "fashion-mnist"


def _is_long(path: Path) -> bool:
    """A pretrained transformer's recipe (minilm-rotten-tomatoes: ~30 min on 2 cores,
    needs scripts/get-text-extra.sh; the smollm2 recipes: a 135M-parameter decoder,
    scripts/get-llm-extra.sh): validated here, run only by the slow suite."""
    return _raw(path).get("model", {}).get("architecture") in ("hf-encoder", "hf-causal-lm")


def _relaxed(key: str, value: float) -> str:
    """A limit a working 2-epoch run meets and a broken one misses: accuracy well above
    chance, at most a quarter lost, and other limits a fifth (min) or five times (max)
    the recipe's own, so a stage that stopped compressing or slowed the model 5x fails."""
    if key == "accuracy_min":
        return "0.5"
    if key == "accuracy_drop_max":
        return "0.25"
    return repr(value / 5 if RULES[key].direction == "min" else value * 5)


def _budget_count(path: Path) -> int:
    raw = _raw(path)
    stages = raw.get("stages", [])
    return sum(key in RULES for key in raw.get("budgets", {})) + sum(
        key in RULES for stage in stages for key in stage.get("budgets", {})
    )


def tiny_overrides(path: Path) -> list[str]:
    """--set overrides that make a recipe run in seconds and meet every budget.

    Training stages get at most 2 epochs, pruning fine-tunes 1 epoch per step,
    calibration 64 samples, latency 2 rounds of 5 runs; budgets are relaxed to what
    such a run reaches (`_relaxed`), never to limits that cannot fail.
    """
    raw = _raw(path)
    sets = [
        "runtime.warmup=2",
        "runtime.repeats=5",
        "runtime.rounds=2",
        "runtime.train_threads=1",
    ]
    # `profile` says where budgets read, it is no limit to relax
    budgets = raw.get("budgets", {})
    sets += [
        f"budgets.{key}={_relaxed(key, value)}" for key, value in budgets.items() if key in RULES
    ]
    for index, stage in enumerate(raw.get("stages", [])):
        where = f"stages[{index}]"
        if "epochs" in stage or stage.get("type") in ("train", "distill"):
            sets.append(f"{where}.epochs={min(stage.get('epochs', 2), 2)}")
        if stage.get("type") == "prune":
            sets.append(f"{where}.finetune.epochs=1")
        if stage.get("type") == "quantize" and "calibration" in _method_keys(stage):
            sets.append(f"{where}.calibration.samples=64")  # only methods that calibrate
        if stage.get("type") == "export":
            # A 2-epoch model sits near its decision boundaries, so int8 flips more of its
            # predictions than a trained one does; the full recipes keep the real check.
            sets.append(f"{where}.agreement_min=0.8")
        budgets = {k: v for k, v in stage.get("budgets", {}).items() if k in RULES}
        sets += [f"{where}.budgets.{key}={_relaxed(key, value)}" for key, value in budgets.items()]
    return sets


def _method_keys(stage: dict) -> set[str]:
    """The keys the quantize table's method takes (dynamic int8 reads no calibration)."""
    from compress.recipe.stages import QUANTIZE_METHOD_CONFIGS, method_name

    return set(QUANTIZE_METHOD_CONFIGS.get(method_name(stage)).model_fields)


def test_the_default_suite_runs_a_recipe_end_to_end():
    # an empty glob or every recipe marked long would leave the end-to-end test
    # below with nothing to run, silently
    tiny = [p.name for p in RECIPES if not _needs_fashion_mnist(p) and not _is_long(p)]

    assert "digits.toml" in tiny


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_validates(path):
    recipe = load_recipe(path)

    assert recipe.name
    assert len(recipe.stage_names()) == len(recipe.stages)


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_tiny_overrides_validate(path):
    recipe = load_recipe(path, tiny_overrides(path))

    assert recipe.runtime.repeats == 5
    assert all(getattr(stage, "epochs", 0) <= 2 for stage in recipe.stages)


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_runs_end_to_end_when_tiny(tmp_path, path):
    if _needs_fashion_mnist(path):
        pytest.skip("needs fashion-mnist: too slow for the default suite")
    if _is_long(path):
        pytest.skip("a pretrained transformer: too slow for the default suite, even tiny")
    recipe = load_recipe(path)

    run = run_cli(
        "run",
        path,
        "--out",
        tmp_path / "run",
        "--quiet",
        *(arg for assignment in tiny_overrides(path) for arg in ("--set", assignment)),
        cwd=tmp_path,
        out=tmp_path / "run",
    )

    assert run.returncode == 0, run.output
    report = run.report
    assert report["status"] == "passed"
    assert [s["name"] for s in report["stages"]] == recipe.stage_names()
    assert all(s["status"] == "passed" for s in report["stages"])
    checked = [b for s in report["stages"] for b in s["budgets"]] + report["final"]["budgets"]
    assert len(checked) == _budget_count(path)  # each relaxed budget checked, none skipped
    assert all(b["passed"] and not b.get("skipped") and b["value"] is not None for b in checked)
    assert (run.out / "final" / "model.onnx").is_file()
    chance = 1 / report["final"]["input"]["output"]["shape"][1]
    assert report["final"]["metrics"]["accuracy"] > 2 * chance


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_meets_its_own_budgets(tmp_path, path):
    if _needs_fashion_mnist(path) and not Path(FASHION_MNIST_DIR).is_dir():
        pytest.skip(f"fashion-mnist is not installed at {FASHION_MNIST_DIR}")
    if _is_long(path):
        pytest.importorskip("transformers", reason="needs scripts/get-text-extra.sh")
    package = _raw(path).get("model", {}).get("package")
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"model package {package} is not installed (scripts/get-*-extra.sh)")
    files = _raw(path).get("data", {}).get("files", [])
    if any(str(pattern).startswith("data/") for pattern in files):
        # texts a script wrote into the repository's data/ (recipe paths are relative to it)
        if not glob.glob(str(ROOT / files[0])):
            pytest.skip(f"{files[0]} is missing (scripts/get-llm-extra.sh)")
        (tmp_path / "data").symlink_to(ROOT / "data")

    run = run_cli("run", path, "--out", tmp_path / "run", "--quiet", cwd=tmp_path, timeout=3600)

    assert run.returncode == 0, run.output
