"""Hostile input: hundreds of generated malformed recipes, each a clean exit 2.

CI's one recipe-fuzzing suite (150 cases; 300 under the nightly profile, which also
runs test_hostile_inputs.py's byte, structure and --set fuzzers: tests/properties.py).

Every case mutates a valid recipe one way (unknown key, wrong type, out-of-range value,
missing required key, bogus discriminator, broken TOML) and runs both `compress
validate` and `compress run` in-process: exit code 2, a message that starts with the
file name and names the key path, and no traceback.
"""

from __future__ import annotations

import copy

import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.cli import main
from compress.recipe.loader import format_key_path
from compress.testing import tiny_recipe_dict
from tests.properties import examples

pytestmark = pytest.mark.integration

BASE = tiny_recipe_dict(
    stages=[
        {"type": "train", "epochs": 2, "optimizer": {"name": "adam", "lr": 0.01}},
        {"type": "prune", "ratio": 0.5, "finetune": {"epochs": 1}},
        {"type": "export"},
    ],
    budgets={"accuracy_min": 0.5},
)

# (key path, a value of the wrong type, an out-of-range value)
FIELDS = [
    (("seed",), "zero", -1),
    (("data", "val_fraction"), "a lot", 0.9),
    (("data", "max_train_samples"), [1], 0),
    (("runtime", "threads"), "two", 0),
    (("runtime", "repeats"), {"x": 1}, -5),
    (("budgets", "accuracy_min"), "high", 1.5),
    (("stages", 0, "epochs"), "ten", -3),
    (("stages", 0, "batch_size"), 3.5, 0),
    (("stages", 0, "optimizer", "lr"), "fast", -0.1),
    (("stages", 1, "ratio"), "half", 1.5),
    (("stages", 1, "steps"), [], 0),
    (("stages", 1, "finetune", "epochs"), "one", -1),
    (("model", "widths"), "wide", [0, 8]),
]
TABLES = [
    (),
    ("data",),
    ("runtime",),
    ("budgets",),
    ("stages", 0),
    ("stages", 1),
    ("stages", 0, "optimizer"),
    ("stages", 1, "finetune"),
    ("model",),
]
REQUIRED = [("name",), ("stages",), ("stages", 1, "type")]
DISCRIMINATORS = [
    ("stages", 0, "type"),
    ("stages", 1, "method"),
    ("model", "architecture"),
    ("stages", 0, "optimizer", "name"),
    ("data", "source"),
]


def _set(recipe: dict, path: tuple, value) -> dict:
    node = recipe
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return recipe


def _delete(recipe: dict, path: tuple) -> dict:
    node = recipe
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return recipe


@st.composite
def malformed(draw):
    """(TOML text, the key path the error must name or None for syntax errors)."""
    recipe = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["unknown", "type", "range", "missing", "tag", "syntax"]))
    if kind == "unknown":
        table = draw(st.sampled_from(TABLES))
        key = draw(
            st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True).filter(
                lambda k: (
                    k
                    not in {
                        "name",
                        "seed",
                        "type",
                        "ratio",
                        "steps",
                        "epochs",
                        "lr",
                        "weights",
                        "description",
                        "data",
                        "model",
                        "runtime",
                        "budgets",
                        "stages",
                        "tune",
                        "method",
                        "schedule",
                        "betas",
                        "eps",
                        "augment",
                        "widths",
                        "hidden",
                        "dropout",
                        "source",
                        "path",
                        "threads",
                        "warmup",
                        "repeats",
                        "rounds",
                        "student",
                        "momentum",
                        "nesterov",
                        "dampening",
                        "alpha",
                        "temperature",
                        "finetune",
                        "importance",
                        "target",
                        "opset",
                        "round_to",
                        "distill",
                        "calibration",
                        "mode",
                        "format",
                        "batch_size",
                        "grad_clip",
                        "early_stopping",
                        "optimizer",
                        "label_smoothing",
                        "providers",
                        "batch_norm",
                        "gamma",
                    }
                )
            )
        )
        node = recipe
        for part in table:
            node = node[part]
        node[key] = draw(st.one_of(st.integers(), st.text(max_size=5), st.booleans()))
        return tomli_w.dumps(recipe), (*table, key)
    if kind in ("type", "range"):
        path, wrong, out_of_range = draw(st.sampled_from(FIELDS))
        return tomli_w.dumps(_set(recipe, path, wrong if kind == "type" else out_of_range)), path
    if kind == "missing":
        path = draw(st.sampled_from(REQUIRED))
        return tomli_w.dumps(_delete(recipe, path)), path
    if kind == "tag":
        path = draw(st.sampled_from(DISCRIMINATORS))
        bogus = draw(
            st.from_regex(r"[a-z]{3,10}", fullmatch=True).filter(
                lambda v: (
                    v
                    not in {
                        "train",
                        "distill",
                        "prune",
                        "quantize",
                        "export",
                        "structured",
                        "cnn",
                        "resnet",
                        "mlp",
                        "mobilenet",
                        "transformer",
                        "adam",
                        "adamw",
                        "sgd",
                        "momentum",
                        "nesterov",
                        "rmsprop",
                        "adagrad",
                        "npz",
                        "unstructured",
                    }
                )
            )
        )
        return tomli_w.dumps(_set(recipe, path, bogus)), path
    lines = tomli_w.dumps(recipe).splitlines()
    at = draw(st.integers(min_value=0, max_value=len(lines)))
    junk = draw(st.sampled_from(["= =", "[[", 'x = "unterminated', "key = ", "]]x", "a = 1 2"]))
    return "\n".join([*lines[:at], junk, *lines[at:]]) + "\n", None


def _expected_fragment(path) -> str | None:
    if path is None:
        return None
    parts = list(path)
    # a removed stage type leaves no discriminator: the message names the stage
    if parts[-1] == "type" and parts[0] == "stages":
        return format_key_path(parts[:-1])
    return format_key_path(parts)


@settings(
    database=None,
    max_examples=examples(ci=150, nightly=300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(malformed())
def test_every_malformed_recipe_exits_2_naming_the_key_path(tmp_path, case):
    text, path = case
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text, encoding="utf-8", errors="surrogateescape")
    runner = CliRunner()
    for args in (["validate", str(recipe)], ["run", str(recipe), "--out", str(tmp_path / "r")]):
        result = runner.invoke(main, args)

        assert result.exit_code == 2, (args[0], text, result.output)
        assert isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output
        assert "error: bad.toml:" in result.output, result.output
        fragment = _expected_fragment(path)
        if fragment is not None:
            assert fragment in result.output, (fragment, result.output)
    assert not (tmp_path / "r").exists()  # nothing ran, nothing written
