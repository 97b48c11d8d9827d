"""MLflow tracking against a real `mlflow server`: runs, tune studies, a server that is down.

Everything is read back through the MLflow client (runs, params, metric histories,
tags, artifacts), never from the server's files.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from compress.testing import run_cli, tiny_recipe_dict, write_recipe
from tests.servers import free_port

# one worker starts the MLflow server, once (a session fixture per xdist worker)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("servers")]

DIGITS = Path(__file__).resolve().parents[2] / "recipes" / "digits.toml"

# digits.toml shrunk to seconds; the final accuracy_min of 0.999 makes one budget fail.
DIGITS_FAST = [
    "runtime.warmup=2", "runtime.repeats=5", "runtime.rounds=2", "runtime.train_threads=1",
    "stages[0].epochs=1", "stages[1].epochs=1", "stages[2].steps=1",
    "stages[2].finetune.epochs=1", "stages[3].calibration.samples=64",
    "stages[4].agreement_min=0.5", "stages[0].budgets.accuracy_min=0.0",
    "stages[3].budgets.speedup_vs_input_min=1e-9", "budgets.accuracy_drop_max=1.0",
    "budgets.size_ratio_min=1e-9", "budgets.accuracy_min=0.999",
]  # fmt: skip


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, experiment: str, query: str = "") -> list:
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment!r} was not created"
    return client.search_runs([found.experiment_id], filter_string=query)


def _history(client, run_id: str, key: str) -> list:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


def _artifacts(client, run_id: str, path: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out.update(_artifacts(client, run_id, item.path))
        else:
            out[item.path] = item.file_size
    return out


def test_a_digits_run_appears_with_params_stage_metrics_budget_tags_and_artifacts(
    tmp_path, mlflow_server
):
    sets = [arg for value in DIGITS_FAST for arg in ("--set", value)]
    sets += ["--set", 'tracking.mlflow.experiment="digits-it"']
    out = tmp_path / "run"

    run = run_cli("run", DIGITS, "--out", out, "--mlflow", mlflow_server, *sets, cwd=tmp_path,
                  out=out)  # fmt: skip

    assert run.returncode == 1, run.output  # the 0.999 final budget is missed, on purpose
    assert "warning" not in run.stderr, run.stderr
    report = run.report
    (found,) = _runs(mlflow_server, "digits-it")
    client = _client(mlflow_server)
    mlrun = client.get_run(found.info.run_id)
    assert mlrun.info.status == "FAILED"  # a missed budget
    params = mlrun.data.params
    assert params["stages.0.type"] == "train"
    assert params["stages.2.ratio"] == "0.3"
    assert params["model.widths"] == "[32, 64]"
    assert params["budgets.accuracy_min"] == "0.999"
    assert "tracking.mlflow.uri" not in params  # where it is logged is not the recipe
    # every stage's metrics, with the stage's index as the step
    stages = report["stages"]
    assert [s["name"] for s in stages] == ["train", "distill", "prune", "quantize", "export"]
    run_id = mlrun.info.run_id
    for key in ("accuracy", "size_bytes", "params", "macs", "latency.cpu.p50_ms",
                "latency.cpu.p90_ms", "profile.b1-t1.cpu.p50_ms"):  # fmt: skip
        assert [m.step for m in _history(client, run_id, key)] == [1, 2, 3, 4, 5], key
    accuracy = [m.value for m in _history(client, run_id, "accuracy")]
    assert accuracy == pytest.approx([s["metrics"]["accuracy"] for s in stages])
    macs = [m.value for m in _history(client, run_id, "macs")]
    assert macs == [float(s["metrics"]["macs"]) for s in stages]
    timed = [i for i, s in enumerate(stages, 1) if (s["metrics"].get("speedup_vs_input") or {})
             .get("rounds")]  # fmt: skip
    assert timed[:3] == [2, 3, 4]  # distill, prune, quantize were timed against their input
    speedups = _history(client, run_id, "speedup_vs_input")
    assert [m.step for m in speedups] == timed
    assert [m.value for m in speedups] == pytest.approx(
        [stages[i - 1]["metrics"]["speedup_vs_input"]["median"] for i in timed]
    )
    final = report["final"]["metrics"]["accuracy"]
    assert mlrun.data.metrics["final.accuracy"] == pytest.approx(final)
    # budgets as pass/fail tags with their messages
    tags = mlrun.data.tags
    assert tags["budget.train.accuracy"] == "pass"
    assert tags["budget.quantize.speedup_vs_input"] == "pass"
    assert tags["budget.final.accuracy"] == "fail"
    final_accuracy = next(c for c in report["final"]["budgets"] if c["metric"] == "accuracy")
    assert tags["budget.final.accuracy.message"] == final_accuracy["message"]
    assert tags["compress.status"] == "failed" and tags["compress.exit_code"] == "1"
    assert tags["compress.version"] == report["compress_version"]
    assert tags["compress.cpu"] == report["environment"]["cpu"]
    assert tags["compress.isa"].split(",") == (report["environment"]["isa"] or ["none"])
    # the report files, the resolved recipe, the final model and its contract
    files = _artifacts(client, mlrun.info.run_id)
    for name in ("report.json", "report.md", "report.html", "recipe.resolved.toml",
                 "final/model.onnx", "final/model.contract.json"):  # fmt: skip
        assert files.get(name) == (out / name).stat().st_size, name


def _tune_recipe(trials: int) -> dict:
    recipe = tiny_recipe_dict(
        data={"max_train_samples": 300},
        stages=[{"type": "train", "epochs": 1, "batch_size": 32,
                 "optimizer": {"name": "adam", "lr": 0.01}}, {"type": "export"}],
    )  # fmt: skip
    recipe["tune"] = {
        "stage": "train", "sampler": "random", "trials": trials,
        "space": {"stages[0].optimizer.lr": {"type": "log-float", "low": 1e-3, "high": 3e-2}},
    }  # fmt: skip
    return recipe


def test_tune_logs_the_study_as_a_parent_run_and_each_trial_as_a_child(tmp_path, mlflow_server):
    raw = _tune_recipe(trials=3)
    raw["tracking"] = {"mlflow": {"uri": "http://unused.invalid", "experiment": "tune-it"}}
    path = write_recipe(tmp_path / "t.toml", raw)

    run = run_cli("tune", path, "--out", tmp_path / "tune", "--mlflow", mlflow_server,
                  cwd=tmp_path)  # fmt: skip

    assert run.returncode == 0, run.output
    assert "warning" not in run.stderr, run.stderr
    rows = json.loads((tmp_path / "tune" / "trials.json").read_text())
    complete = {r["number"]: r for r in rows if r["state"] == "COMPLETE"}
    assert len(complete) == 3
    (parent,) = _runs(mlflow_server, "tune-it", "tags.`compress.kind` = 'tune study'")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["tune.trials"] == "3"
    assert parent.data.params["tune.sampler"] == "random"
    best = max(complete.values(), key=lambda r: r["val_accuracy"])
    assert parent.data.metrics["best.val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert parent.data.metrics["trials.complete"] == 3
    client = _client(mlflow_server)
    assert {"trials.json", "best.toml", "best.json"} <= set(_artifacts(client, parent.info.run_id))
    children = _runs(mlflow_server, "tune-it", f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_number = {int(c.data.tags["optuna.trial"]): c for c in children}
    assert set(by_number) == set(complete)
    for number, row in complete.items():
        child = by_number[number]
        assert child.info.status == "FINISHED"
        assert float(child.data.params["stages.0.optimizer.lr"]) == pytest.approx(
            row["params"]["stages[0].optimizer.lr"]
        )
        assert child.data.metrics["val_accuracy"] == pytest.approx(row["val_accuracy"])
    assert by_number[0].data.tags["compress.baseline"] == "true"


class _Refuse(BaseHTTPRequestHandler):
    def _deny(self):
        body = b'{"error_code": "PERMISSION_DENIED", "message": "no"}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _deny

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def refusing_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The tiny recipe run once without tracking: what a run with a dead server must match."""
    root = tmp_path_factory.mktemp("plain")
    path = write_recipe(root / "t.toml", tiny_recipe_dict())
    return run_cli("run", path, "--out", root / "plain", cwd=root, out=root / "plain")


@pytest.mark.parametrize("server", ["down", "refusing"])
def test_a_tracking_server_that_is_down_or_refuses_is_one_warning_and_the_run_goes_on(
    tmp_path, server, request, plain
):
    uri = (
        f"http://127.0.0.1:{free_port()}"
        if server == "down"
        else request.getfixturevalue("refusing_server")
    )
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    run = run_cli("run", path, "--out", tmp_path / "run", "--mlflow", uri, cwd=tmp_path,
                  out=tmp_path / "run")  # fmt: skip

    assert run.returncode == plain.returncode == 0, run.output
    warnings = [line for line in run.stderr.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, run.stderr
    assert "MLflow tracking at " + uri in warnings[0] and "run folder is the record" in warnings[0]
    assert run.report["status"] == "passed"
    assert (tmp_path / "run" / "final" / "model.onnx").is_file()
    assert [s["name"] for s in run.report["stages"]] == ["train", "export"]


def test_tune_with_a_server_that_is_down_still_finishes(tmp_path):
    path = write_recipe(tmp_path / "t.toml", _tune_recipe(trials=2))

    run = run_cli("tune", path, "--out", tmp_path / "tune", "--mlflow",
                  f"http://127.0.0.1:{free_port()}", cwd=tmp_path)  # fmt: skip

    assert run.returncode == 0, run.output
    assert len([line for line in run.stderr.splitlines() if "warning" in line.lower()]) == 1
    assert (tmp_path / "tune" / "best.toml").is_file()
