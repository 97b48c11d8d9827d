"""Options several `compress` commands share (kept out of cli.py so it stays short)."""

from __future__ import annotations

import click

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a recipe value, e.g. --set stages[0].epochs=3 (repeatable).",
)
debug_option = click.option("--debug", is_flag=True, help="Show tracebacks and exporter output.")
no_user_code_option = click.option(
    "--no-user-code",
    is_flag=True,
    help="Refuse (exit 2) a recipe that names any 'package.module:function', before "
    "importing it: for recipes you do not trust (README: Trusting recipes).",
)
mlflow_option = click.option(
    "--mlflow",
    "mlflow_uri",
    default=None,
    metavar="URI",
    help="Log to this MLflow tracking server (overrides [tracking.mlflow].uri; needs "
    "compress[tracking]). A server that is down costs one warning, never the run.",
)
