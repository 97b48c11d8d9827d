"""`compress tune`'s table: one row per trial, the best marked."""

from __future__ import annotations

from rich.table import Table


def trials_table(outcome, tune) -> Table:
    """The study's trials: number (* best, (recipe) the recipe's own values), state,
    validation accuracy, p50, the sampled values and the seconds each took."""
    table = Table(title=f"trials ({tune.sampler}, objective {tune.objective})")
    for column in ("#", "state", "val acc", "p50 ms", "params", "s"):
        table.add_column(column)
    best_numbers = {row["number"] for row in outcome.best}
    for row in outcome.trials:
        mark = " *" if row["number"] in best_numbers else ""
        table.add_row(
            f"{row['number']}{mark}{' (recipe)' if row['baseline'] else ''}",
            row["state"],
            f"{row['val_accuracy']:.4f}" if row["val_accuracy"] is not None else "-",
            f"{row['latency_p50_ms']:.4g}" if row["latency_p50_ms"] is not None else "-",
            ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row["params"].items()
            ),
            f"{row['duration_s']:.1f}" if row["duration_s"] else "-",
        )
    return table
