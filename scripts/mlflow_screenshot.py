"""Screenshot the MLflow UI showing a real compress run (docs/images/mlflow-*.png).

Starts `mlflow server` (sqlite backend, in a temporary folder) on 127.0.0.1, runs
`compress run RECIPE --mlflow URI`, then takes headless-Chromium screenshots of the
run's page from the live server, and stops the server.

Usage:
    python scripts/mlflow_screenshot.py [recipes/digits.toml] [--out docs/images]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "digits.toml"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--port", type=int, default=5077)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found (apt-get install chromium)")
    work = Path(tempfile.mkdtemp(prefix="compress-mlflow-shot-"))
    uri = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination", str(work / "artifacts"),
         "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(360):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        subprocess.run(
            [sys.executable, "-m", "compress", "run", args.recipe, "--out", str(work / "run"),
             "--quiet", "--mlflow", uri],
            cwd=work, check=False,
        )  # fmt: skip
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("compress")
        (run,) = client.search_runs([experiment.experiment_id], max_results=1)
        base = f"{uri}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
        # (the metric-chart tab stays blank in headless Chromium here: its charts render
        # only when visible, so the run page with its tags is what is shot)
        pages = {"mlflow-run.png": base}
        for name, url in pages.items():
            target = Path(args.out) / name
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--window-size=1400,1000", "--virtual-time-budget=15000",
                 f"--screenshot={target}", url],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            print(f"wrote {target} ({url})")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
