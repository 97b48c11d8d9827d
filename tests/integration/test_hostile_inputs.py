"""Property-based hostile input: corrupted recipes, `.npz` files and run folders.

Hypothesis draws corruptions of valid inputs (bytes truncated, flipped, inserted;
keys deleted, retyped, invented; arrays with NaN, wrong dtypes and shapes, odd labels;
run-folder files truncated, flipped, deleted or rewritten) and runs the CLI in-process
on each. Every case must end in exit 0, 1 or 2 with no traceback and nothing
half-written; exit 3 only where a stage itself fails (a training that diverges) and
for `compress report` on an unreadable or misshapen report.json (ArtifactError's code).

Cases per run (max_examples, nightly profile / ci profile, tests/properties.py): recipe
bytes 150 / -, recipe structure 120 / -, --set 40 / - (CI fuzzes recipes once, in
test_hostile_recipes.py), .npz files 80 / 40, run folders read by `compress report`
50 / 25 and rerun by `compress run` 12 / 6, tiny trainings on valid random data 4 / 2:
456 / 73 in all.
Two kinds of damage the suite found are now in the draws, each with a test of its
own at the end: valid JSON of the wrong shape in report.json (`compress report` says
"not a compress report", exit 3) and values edited into a cached stage's metrics.json
(`compress run` no longer trusts it: the record carries a hash of itself, and the
stage reruns).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tomllib
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from compress.cli import main
from compress.testing import tiny_recipe_dict
from tests.properties import examples, nightly_only

pytestmark = pytest.mark.integration

RECIPES = Path(__file__).parents[2] / "recipes"
TINY = tiny_recipe_dict(budgets={"accuracy_min": 0.5})
BASE_TEXTS = [tomli_w.dumps(TINY)] + [
    path.read_text(encoding="utf-8") for path in sorted(RECIPES.glob("*.toml"))
]
BASE_DICTS = [tomllib.loads(text) for text in BASE_TEXTS]
# an import that fails right after the data is accepted: npz cases stop before training
ABSENT_MODEL = "compress_hostile_absent_module:build"


def _settings(examples: int, shrink: bool = True):
    """`shrink=False` for the cases that run stages: a failure is reported as drawn,
    instead of minutes spent re-running smaller ones."""
    return settings(
        database=None,
        max_examples=max(examples, 1),  # 0: a nightly-only test, skipped before it draws
        deadline=None,
        phases=[p for p in Phase if shrink or p not in (Phase.shrink, Phase.explain)],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def _fresh(tmp_path: Path) -> Path:
    """A folder of its own for one example (tmp_path is shared by all of a test's)."""
    folder = tmp_path / uuid.uuid4().hex[:10]
    folder.mkdir()
    return folder


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_clean(result, allowed: set[int]) -> None:
    """Our exit, no traceback, and a failure that says what failed."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in allowed, (result.exit_code, result.output)
    if result.exit_code >= 2:
        said = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert said, result.output


def _assert_whole(folder: Path) -> None:
    """Nothing half-written: no temporary file, every JSON file parses."""
    if not folder.exists():
        return
    assert not [p for p in folder.rglob("*.tmp")], sorted(folder.rglob("*.tmp"))
    for path in folder.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- recipes


@st.composite
def corrupted_bytes(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(BASE_TEXTS)).encode())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "drop", "repeat", "swap"]))
        lines = bytes(data).split(b"\n")
        if op == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            at = draw(st.integers(0, len(data)))
            junk = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=8),
                    st.sampled_from([b"= =", b"[[", b'x = "', b"]]", b"\xff\xfe", b"\x00"]),
                )
            )
            data[at:at] = junk
        else:
            at = draw(st.integers(0, len(lines) - 1))
            if op == "drop":
                del lines[at]
            elif op == "repeat":  # a repeated key or table header
                lines.insert(at, lines[at])
            else:
                other = draw(st.integers(0, len(lines) - 1))
                lines[at], lines[other] = lines[other], lines[at]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@nightly_only
@_settings(examples(ci=0, nightly=150))
@given(text=corrupted_bytes(), no_user_code=st.booleans())
def test_a_recipe_with_corrupted_bytes_validates_or_exits_2(tmp_path, text, no_user_code):
    recipe = _fresh(tmp_path) / "bad.toml"
    recipe.write_bytes(text)

    result = _invoke("validate", recipe, *(["--no-user-code"] if no_user_code else []))

    _assert_clean(result, {0, 2})
    event(f"exit {result.exit_code}")
    if result.exit_code == 2:
        assert "error: bad.toml:" in result.output, result.output


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every table, list item and value in a raw recipe, as key paths."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(
        ["", "npz", "cnn", "mlp", "train", "export", "prune", "a:b", "os:system", "-1", "auto"]
    ),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=6), SCALARS, max_size=3),
)


@st.composite
def mutated_recipe(draw) -> dict:
    raw = copy.deepcopy(draw(st.sampled_from(BASE_DICTS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(raw)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = raw
        for part in path[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["set", "set", "delete", "invent"]))
        if op == "set":
            parent[path[-1]] = draw(VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))] = draw(VALUES)
    return raw


@nightly_only
@_settings(examples(ci=0, nightly=120))
@given(raw=mutated_recipe(), no_user_code=st.booleans())
def test_a_structurally_mutated_recipe_validates_or_exits_2(tmp_path, raw, no_user_code):
    recipe = _fresh(tmp_path) / "bad.toml"
    recipe.write_text(tomli_w.dumps(raw), encoding="utf-8")

    result = _invoke("validate", recipe, *(["--no-user-code"] if no_user_code else []))

    _assert_clean(result, {0, 2})
    event(f"exit {result.exit_code}")


OVERRIDE_VALUES = st.one_of(
    st.text(max_size=15),
    st.sampled_from(["3", "-1", "0.5", "nan", "inf", "[1,", "{a=1}", '"x"', "a:b", "[]", "{}"]),
)


@nightly_only
@_settings(examples(ci=0, nightly=40))
@given(
    base=st.sampled_from(BASE_TEXTS),
    assignments=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(
                    ["seed", "data.source", "stages[0].epochs", "stages[9].lr", "model", "a..b"]
                ),
                st.text(max_size=12),
            ),
            OVERRIDE_VALUES,
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_random_overrides_validate_or_exit_2(tmp_path, base, assignments):
    recipe = _fresh(tmp_path) / "r.toml"
    recipe.write_text(base, encoding="utf-8")
    sets = [arg for key, value in assignments for arg in ("--set", f"{key}={value}")]

    result = _invoke("validate", recipe, *sets)

    _assert_clean(result, {0, 2})


# --------------------------------------------------------------------------- .npz files


def _valid_arrays(draw) -> dict[str, np.ndarray]:
    classes = draw(st.integers(2, 4))
    per_class = draw(st.integers(3, 8))
    shape = draw(st.sampled_from([(1, 4, 4), (6,)]))
    count = classes * per_class
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arrays = {
        "x_train": rng.normal(size=(count, *shape)).astype(np.float32),
        "y_train": np.arange(count) % classes,
    }
    if draw(st.booleans()):
        arrays["x_test"] = rng.normal(size=(classes, *shape)).astype(np.float32)
        arrays["y_test"] = np.arange(classes)
    return arrays


@st.composite
def hostile_npz(draw) -> tuple[dict[str, np.ndarray], list[str], bool]:
    """(arrays, mutations applied, whether the data must be refused).

    `refused` is set only by mutations that make the data unusable whatever else was
    done to it; the rest (fewer samples, a byte flip) may or may not.
    """
    arrays = _valid_arrays(draw)
    applied, refused = [], False
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(NPZ_MUTATIONS))
        if "x_train" not in arrays or "y_train" not in arrays:
            break
        x, y = arrays["x_train"], arrays["y_train"]
        floats, labels = x.dtype.kind == "f", y.dtype.kind in "iu"
        if op in ("nan", "inf") and floats:
            name = draw(st.sampled_from([k for k in ("x_train", "x_test") if k in arrays]))
            flat = arrays[name].reshape(-1).copy()
            flat[draw(st.integers(0, flat.size - 1))] = np.nan if op == "nan" else -np.inf
            arrays[name], refused = flat.reshape(arrays[name].shape), True
        elif op == "negative" and labels:
            name = draw(st.sampled_from([k for k in ("y_train", "y_test") if k in arrays]))
            changed = arrays[name].astype(np.int64)
            changed[draw(st.integers(0, len(changed) - 1))] = -draw(st.integers(1, 9))
            arrays[name], refused = changed, True
        elif op == "float-y":
            arrays["y_train"], refused = y.astype(np.float64), True
        elif op == "bool-y":
            arrays["y_train"], refused = y > 0, True
        elif op == "uint8-y" and labels and y.min() >= 0:
            arrays["y_train"] = y.astype(np.uint8)
        elif op == "int-x" and floats and np.isfinite(x).all() and np.abs(x).max() < 1e3:
            arrays["x_train"] = (x * 10).astype(np.int16)
        elif op == "complex-x" and floats:
            arrays["x_train"], refused = x.astype(np.complex64), True
        elif op == "string-x":
            arrays["x_train"], refused = x.astype(str), True
        elif op == "object-y":
            objects = np.empty(len(y), dtype=object)
            objects[:] = list(y)
            arrays["y_train"], refused = objects, True
        elif op == "reshape-x":
            target = draw(st.sampled_from([(x.size,), (len(x), 1, -1), (len(x), 1, 1, 1, -1)]))
            arrays["x_train"], refused = x.reshape(target), True
        elif op == "one-hot" and labels and y.min() >= 0:
            arrays["y_train"], refused = np.eye(int(y.max()) + 1, dtype=np.int64)[y], True
        elif op == "one-class":
            arrays["y_train"], refused = np.zeros(len(y), np.int64), True
            arrays.pop("x_test", None)
            arrays.pop("y_test", None)
        elif op == "one-based" and labels:
            arrays["y_train"], refused = y.astype(np.int64) + 1, True
        elif op == "few":
            keep = draw(st.integers(1, 5))
            arrays["x_train"], arrays["y_train"] = x[:keep], y[:keep]
        elif op == "drop-key":
            arrays.pop(draw(st.sampled_from(["x_train", "y_train", "y_test"])), None)
            refused = refused or {"x_train", "y_train"} - set(arrays) != set()
            refused = refused or ("x_test" in arrays) != ("y_test" in arrays)
        elif op == "extra-key":
            arrays["notes"] = np.arange(3)  # ignored
        elif op == "scale":
            value = draw(st.sampled_from([0.0, -1.0, np.nan, 1e-3]))
            arrays["scale"] = np.float64(value)
            refused = refused or not value > 0
        elif op == "huge" and floats:
            with np.errstate(over="ignore"):
                arrays["x_train"] = x * np.float32(1e30)
            refused = refused or not np.isfinite(arrays["x_train"]).all()
        elif op == "test-shape" and "x_test" in arrays:
            arrays["x_test"], refused = arrays["x_test"][..., :1], True
        else:
            continue
        applied.append(op)
    return arrays, applied, refused


NPZ_MUTATIONS = [
    "nan", "inf", "negative", "float-y", "bool-y", "uint8-y", "int-x", "complex-x",
    "string-x", "object-y", "reshape-x", "one-hot", "one-class", "one-based", "few",
    "drop-key", "extra-key", "scale", "huge", "test-shape",
]  # fmt: skip


def _npz_recipe(folder: Path, data: Path, model: dict | None = None, **extra) -> Path:
    recipe = tiny_recipe_dict(
        data={"source": "npz", "path": str(data)},
        stages=[{"type": "train", "epochs": 1, "batch_size": 8}],
        **extra,
    )
    recipe["model"] = model or {"architecture": ABSENT_MODEL}
    path = folder / "r.toml"
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    return path


@_settings(examples(ci=40, nightly=80))
@given(case=hostile_npz(), damage=st.sampled_from(["none", "none", "truncate", "flip"]))
def test_a_hostile_npz_is_refused_by_name_before_anything_trains(tmp_path, case, damage):
    arrays, applied, refused = case
    folder = _fresh(tmp_path)
    data = folder / "data.npz"
    np.savez(data, **arrays)  # object arrays are pickled in: the loader must refuse them
    if damage != "none":
        raw = bytearray(data.read_bytes())
        if damage == "truncate":
            raw = raw[: len(raw) // 2]
        else:
            raw[len(raw) // 3] ^= 0xFF
        data.write_bytes(bytes(raw))
        refused = refused or damage == "truncate"
    out = folder / "run"

    result = _invoke("run", _npz_recipe(folder, data), "--out", out, "--quiet")

    _assert_clean(result, {2})
    _assert_whole(out)
    error = json.loads((out / "report.json").read_text())["error"]
    event(error["type"])
    if error["type"] == "DataError":
        assert error["message"].startswith(f"npz {data}"), error
    else:  # the data passed every check; the absent model stopped the run
        assert not refused, (applied, error)
        assert error["type"] == "RecipeError" and ABSENT_MODEL.split(":")[0] in error["message"]
    assert not (out / "train").exists()


@_settings(examples(ci=2, nightly=4), shrink=False)
@given(seed=st.integers(0, 2**16), flat=st.booleans(), scale=st.sampled_from([1.0, 1e-3, 255.0]))
def test_tiny_trainings_on_random_valid_data_finish_cleanly(tmp_path, seed, flat, scale):
    folder = _fresh(tmp_path)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 6) if flat else (30, 1, 4, 4)).astype(np.float32)
    np.savez(folder / "data.npz", x_train=x, y_train=np.arange(30) % 3, scale=np.float64(scale))
    model = {"architecture": "mlp", "hidden": [8]}
    out = folder / "run"

    result = _invoke("run", _npz_recipe(folder, folder / "data.npz", model), "--out", out)

    _assert_clean(result, {0, 1, 3})
    _assert_whole(out)
    report = json.loads((out / "report.json").read_text())
    if result.exit_code == 3:  # only a stage that legitimately failed
        assert report["error"]["type"] in ("StageError", "AgreedStop"), report["error"]
    else:
        assert [s["status"] for s in report["stages"]] in (["passed"], ["failed"])


# --------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(recipe, run folder) of a tiny passing run, for the reruns that must end passed
    (the shared run misses a budget); copy it before changing anything. The tests that
    only read a damaged copy use the session's `shared_run` (every stage type)."""
    root = tmp_path_factory.mktemp("finished")
    recipe = root / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_recipe_dict()), encoding="utf-8")
    result = _invoke("run", recipe, "--out", root / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return recipe, root / "run"


def _run_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


@st.composite
def damage(draw, files: list[str]) -> tuple[str, str, Any]:
    """(file, how, seed)."""
    name = draw(st.sampled_from(files))
    kinds = ["truncate", "flip", "delete", "garbage", "json-leaf"]
    return name, draw(st.sampled_from(kinds)), draw(st.integers(0, 2**32))


def _damage(run: Path, name: str, kind: str, seed: int) -> None:
    target = run / name
    data = bytearray(target.read_bytes())
    rng = np.random.default_rng(seed)
    if kind == "truncate":
        target.write_bytes(bytes(data[: int(rng.integers(0, max(len(data), 1)))]))
    elif kind == "flip" and data:
        data[int(rng.integers(0, len(data)))] ^= int(rng.integers(1, 256))
        target.write_bytes(bytes(data))
    elif kind == "delete":
        target.unlink()
    elif kind == "json-leaf" and name.endswith(".json"):
        document = json.loads(data)
        paths = [p for p in _paths(document) if p] or [()]
        path = paths[int(rng.integers(0, len(paths)))]
        node = document
        for part in path[:-1]:
            node = node[part]
        replacement = [None, -1, "x", [], {}, 1e308, True][int(rng.integers(0, 7))]
        if path:
            node[path[-1]] = replacement
        else:
            document = replacement
        target.write_text(json.dumps(document), encoding="utf-8")
    else:
        target.write_bytes(bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)))


@_settings(examples(ci=25, nightly=50), shrink=False)
@given(data=st.data())
def test_compress_report_on_a_damaged_run_folder_exits_cleanly(tmp_path, shared_run, data):
    run = shared_run.out  # the session's finished run: read, then copied
    name, kind, seed = data.draw(damage(_run_files(run)))
    copy_ = _fresh(tmp_path) / "run"
    shutil.copytree(run, copy_)
    _damage(copy_, name, kind, seed)

    result = _invoke("report", copy_)

    report_json = f"{copy_ / 'report.json'}: "
    unreadable = any(
        report_json + why in result.output for why in ("unreadable", "not a compress report")
    )
    event(f"exit {result.exit_code}")
    _assert_clean(result, {0, 3} if unreadable else {0})
    assert not list(copy_.rglob("*.tmp"))
    if result.exit_code == 0:
        assert (copy_ / "report.md").stat().st_size and (copy_ / "report.html").stat().st_size


@pytest.mark.parametrize("wrong", [None, {"stages": "x"}, {"final": 3}], ids=str)
def test_compress_report_on_a_report_json_of_the_wrong_shape_says_so(tmp_path, shared_run, wrong):
    run = shared_run.out  # the session's finished run: read, then copied
    copy_ = tmp_path / "run"
    shutil.copytree(run, copy_)
    report = json.loads((copy_ / "report.json").read_text())
    document = None if wrong is None else {**report, **wrong}
    (copy_ / "report.json").write_text(json.dumps(document), encoding="utf-8")

    result = _invoke("report", copy_)

    _assert_clean(result, {3})
    assert "report.json: not a compress report" in result.output


@pytest.mark.parametrize(
    ("key", "value", "code"), [("agreement", [], 3), ("size_bytes", None, 0)], ids=str
)
def test_a_damaged_plotted_metric_is_said_or_drawn_without_a_traceback(
    tmp_path, shared_run, key, value, code
):
    """Found by the property above: a list where a plotted number was (`agreement`)
    reached matplotlib and ended as a ValueError traceback."""
    run = shared_run.out  # the session's finished run: read, then copied
    copy_ = tmp_path / "run"
    shutil.copytree(run, copy_)
    report = json.loads((copy_ / "report.json").read_text())
    report["stages"][0]["metrics"][key] = value
    (copy_ / "report.json").write_text(json.dumps(report), encoding="utf-8")

    result = _invoke("report", copy_)

    _assert_clean(result, {code})
    if code == 3:
        assert "report.json: not a compress report" in result.output and key in result.output


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("stages", 0, "metrics", "profiles"), None),
        (("stages", 0, "metrics", "profiles", "b1-t1", "latency"), None),
        (("stages", 0, "metrics", "speedup", "median"), None),
        (("stages", 0, "metrics", "params"), {}),
        (("stages", 0, "metrics", "primary_provider"), []),
        (("final", "input", "preprocessing"), None),
        (("final", "input", "output"), None),
        (("runtime",), {}),
    ],
    ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else repr(v),
)
def test_a_damaged_rendered_value_is_said_not_an_internal_error(tmp_path, shared_run, path, value):
    """Found by the run-folder property (CI, one draw in 50): every value the renderers
    read is in the reader's shape check, so damage to one is exit 3 naming its key path."""
    run = shared_run.out  # the session's finished run: read, then copied
    copy_ = tmp_path / "run"
    shutil.copytree(run, copy_)
    report = json.loads((copy_ / "report.json").read_text())
    node = report
    for part in path[:-1]:
        node = node[part]
    assert path[-1] in node  # the tiny run writes this value: the damage is real
    node[path[-1]] = value
    (copy_ / "report.json").write_text(json.dumps(report), encoding="utf-8")

    result = _invoke("report", copy_)

    _assert_clean(result, {3})
    assert "report.json: not a compress report" in result.output
    assert ".".join(map(str, path[:2])) in result.output


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@_settings(examples(ci=6, nightly=12), shrink=False)
@given(data=st.data())
def test_a_rerun_into_a_damaged_run_folder_repairs_it(tmp_path, finished_run, data):
    recipe, run = finished_run
    files = _run_files(run)
    name, kind, seed = data.draw(damage(files))
    copy_ = _fresh(tmp_path) / "run"
    shutil.copytree(run, copy_)
    _damage(copy_, name, kind, seed)

    result = _invoke("run", recipe, "--out", copy_, "--quiet")

    _assert_clean(result, {0, 1})
    _assert_whole(copy_)
    report = json.loads((copy_ / "report.json").read_text())
    assert report["status"] == "passed" and report["exit_code"] == 0
    final = report["final"]
    assert final["sha256"] == _sha256(copy_ / final["path"])  # the model it names, whole
    for stage in report["stages"]:
        for path in stage["artifacts"].values():
            assert not isinstance(path, str) or (copy_ / path).is_file(), path


def test_an_edited_cached_metrics_json_is_not_trusted(tmp_path, finished_run):
    recipe, run = finished_run
    copy_ = tmp_path / "run"
    shutil.copytree(run, copy_)
    metrics = copy_ / "train" / "metrics.json"
    record = json.loads(metrics.read_text())
    measured = record["metrics"]["accuracy"]
    record["metrics"]["accuracy"] = 0.01
    metrics.write_text(json.dumps(record), encoding="utf-8")

    result = _invoke("run", recipe, "--out", copy_, "--quiet")

    _assert_clean(result, {0})
    report = json.loads((copy_ / "report.json").read_text())
    assert report["stages"][0]["metrics"]["accuracy"] == measured
    assert report["stages"][0]["cache_rejected"] == "metrics.json does not match its recorded hash"
