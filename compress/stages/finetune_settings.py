"""The optimizer a prune stage's fine-tune uses when its recipe names none.

A fine-tune after pruning continues the model's training, so it starts where that
training ended: the optimizer of the last fit this run made of the model (train,
distill, or an earlier prune stage's fine-tune), read from the run's history, at
the learning rate of that fit's last epoch. A schedule that decayed to (almost)
zero would leave a fine-tune that learns nothing, so the rate is at least a tenth
of the fit's peak. A model that arrived with weights and was not trained in this
run gets `PRETRAINED_FINETUNE` (AdamW, lr 1e-4, weight decay 0.01: the usual
fine-tuning rate for pretrained weights). A model neither trained nor loaded (only
tests do that) keeps the finetune table's own defaults (Adam, lr 1e-3).

The fine-tune's schedule, epochs and batch size stay the stage's own.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from compress.recipe.schema import AdamConfig, OptimizerConfig

PRETRAINED_FINETUNE = AdamConfig(name="adamw", lr=1e-4, weight_decay=0.01)
UNTRAINED_FINETUNE = AdamConfig(name="adam")  # the training table's own default
# the inherited rate is never below this share of the previous fit's peak rate
LR_FLOOR_OF_PEAK = 0.1


def _last_fit(history: list[Any]) -> tuple[str, dict[str, Any]] | None:
    """The newest fit summary in the run's stage records (name, summary), or None
    when none exists before the starting point (an `input` stage) or at all."""
    for record in reversed([_plain(record) for record in history]):
        details = record.get("details") or {}
        if record.get("type") == "input":
            return None
        if (details.get("training") or {}).get("optimizer"):
            return record["name"], details["training"]
        tuned = [s["finetune"] for s in details.get("steps") or [] if s.get("finetune")]
        if tuned and tuned[-1].get("optimizer"):
            return record["name"], tuned[-1]
    return None


def _plain(record) -> dict[str, Any]:
    """A typed stage record (what the runner keeps) as the JSON report.json holds."""
    return record.to_json() if hasattr(record, "to_json") else record


def _arrived_with_weights(ctx) -> bool:
    if any(_plain(r).get("type") == "input" for r in ctx.history):
        return True
    return bool(getattr(ctx.recipe.model, "weights", None))


def finetune_settings(ctx, finetune) -> tuple[Any, dict[str, Any]]:
    """The finetune config to train with, and what the report says about it.

    Args:
        ctx: the run context; `ctx.history` holds the earlier stages' records.
        finetune: the stage's `finetune` table.

    Returns:
        (config, {"optimizer": the table used, "source": where it came from}).

    Example:
        >>> config, used = finetune_settings(ctx, stage.finetune)  # doctest: +SKIP
        >>> used["source"]  # doctest: +SKIP
        "stage 'train': its optimizer at its last epoch's lr 0.000125"
    """
    if finetune.optimizer is not None:  # None (the default): continue the last training
        return finetune, _used(finetune, "the stage's finetune.optimizer")
    previous = _last_fit(ctx.history)
    if previous is not None:
        name, summary = previous
        last, peak = summary.get("last_lr"), summary.get("peak_lr")
        lr = max(last, LR_FLOOR_OF_PEAK * peak) if last and peak else summary["optimizer"]["lr"]
        table = {**summary["optimizer"], "lr": lr}
        optimizer = TypeAdapter(OptimizerConfig).validate_python(table)
        how = (
            f"its last epoch's lr {lr:.3g}"
            if lr == last
            else f"lr {lr:.3g} ({LR_FLOOR_OF_PEAK:g} x its peak; its last epoch's was {last:.3g})"
        )
        config = finetune.model_copy(update={"optimizer": optimizer})
        return config, _used(config, f"stage '{name}': its optimizer at {how}")
    if _arrived_with_weights(ctx):
        config = finetune.model_copy(update={"optimizer": PRETRAINED_FINETUNE})
        return config, _used(config, "default for a model that arrived with weights")
    config = finetune.model_copy(update={"optimizer": UNTRAINED_FINETUNE})
    return config, _used(config, "default (the model was not trained in this run)")


def _used(config, source: str) -> dict[str, Any]:
    return {
        "optimizer": config.optimizer.model_dump(mode="json"),
        "schedule": config.schedule.model_dump(mode="json"),
        "source": source,
    }
