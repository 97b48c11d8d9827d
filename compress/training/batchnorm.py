"""BatchNorm running statistics re-estimated once the weights changed.

Eval mode normalises by the running statistics a BatchNorm stored while training.
After channels are removed, or after a fine-tune with a small momentum (0.01 in
models ported from TensorFlow, whose 0.99 means the same: statistics move 1% a
batch), those statistics describe another model: train mode is fine, eval mode is
wrong. A pretrained ImageNet CNN pruned 0.3 in 2 steps validated at 58%; the same
weights with re-estimated statistics at 82%.

`recalibrate_batch_norm_` resets the statistics and re-estimates them over a
bounded, seeded draw of training rows: BatchNorm layers in train mode with
momentum None (a cumulative average), everything else (dropout) in eval mode, no
gradients. `recalibrate_checked_` does that and keeps the new statistics only when
they measurably help on validation data (without labels: agreement with a reference
model's predictions), returning the record the report shows.

"Measurably" is a paired test, not a comparison of two accuracies. Old and new
statistics are scored on the same validation rows, so only the rows where they
disagree carry evidence: `improved` rows the new statistics get right and the old
wrong, `worsened` the reverse. With no real difference each such row is a fair coin
(McNemar's exact test, the sign test on discordant rows); the new statistics are
kept when `improved > worsened` and the one-sided p-value is at most
`batch_norm.significance` (0.05). On digits' ~180 validation rows a one-row gain
(0.56 points) is p = 0.5: noise, which is what "kept when accuracy did not fall"
kept, and the bundled recipes' test accuracies fell by such amounts. A collapse
rescued (58% -> 82%) is dozens of rows one way: p far below 0.05.

Under several ranks each rank runs its share of the batches and the statistics
are averaged over ranks (`Strategy.reduce_sum`), so every rank ends with the
same statistics, estimated over the whole draw, as the DDP engine's global
BatchNorm does while training.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from compress.data.bundle import DataBundle, Split
from compress.recipe.schema import BatchNormConfig
from compress.training.batches import epoch_batches
from compress.training.inference import split_logits
from compress.training.strategy import SingleProcess, Strategy

_BatchNorm = nn.modules.batchnorm._BatchNorm


def batch_norm_layers(model: nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers (1d, 2d, 3d and subclasses) that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def sample_plan(split: Split, samples: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Row indices of the recalibration batches: the first `samples` rows of a seeded
    permutation, `batch_size` at a time (a last batch of one row is dropped: BatchNorm
    cannot take one sample in train mode).

    Example:
        >>> split = Split(torch.zeros(10, 2), torch.zeros(10, dtype=torch.int64))
        >>> [len(b) for b in sample_plan(split, 7, 3, seed=0)]
        [3, 3]
    """
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    order = order[:samples]
    plan = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [index for index in plan if len(index) > 1]


def _average_over_ranks(layers: list[_BatchNorm], strategy: Strategy) -> None:
    """Each rank's cumulative averages, weighted by its batch count, averaged over ranks."""
    parts = []
    for layer in layers:
        count = layer.num_batches_tracked.to(torch.float64).reshape(1)
        parts += [layer.running_mean.double() * count, layer.running_var.double() * count, count]
    summed = strategy.reduce_sum(torch.cat(parts))
    offset = 0
    for layer in layers:
        width = layer.running_mean.numel()
        mean, var = summed[offset : offset + width], summed[offset + width : offset + 2 * width]
        count = summed[offset + 2 * width]
        offset += 2 * width + 1
        if count > 0:
            layer.running_mean.copy_(mean / count)
            layer.running_var.copy_(var / count)
            layer.num_batches_tracked.fill_(int(count.item()))


@torch.no_grad()
def recalibrate_batch_norm_(
    model: nn.Module,
    split: Split,
    samples: int,
    batch_size: int = 64,
    seed: int = 0,
    strategy: Strategy | None = None,
) -> tuple[int, int]:
    """Reset every BatchNorm's running statistics and re-estimate them, in place.

    A BatchNorm someone froze (its `train()` leaves it in eval mode, as QAT does)
    keeps its statistics. The training split is read through the batch API, so a
    lazy image folder decodes only the drawn rows.

    Args:
        model: changed in place; its train/eval mode is restored.
        split: the rows to estimate over (the training split, un-augmented).
        samples: at most this many rows, a seeded draw.
        batch_size: rows per forward pass.
        seed: seeds the draw (the same on every rank).
        strategy: several ranks: each runs its share of the batches, statistics are
            averaged over ranks.

    Returns:
        (rows seen over all ranks, BatchNorm layers re-estimated); (0, 0) changes nothing.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
        >>> split = Split(torch.randn(8, 2), torch.zeros(8, dtype=torch.int64))
        >>> recalibrate_batch_norm_(model, split, samples=8, batch_size=4)
        (8, 1)
    """
    strategy = strategy or SingleProcess()
    plan = sample_plan(split, samples, batch_size, seed)
    was_training = model.training
    model.eval()
    layers = []
    for layer in batch_norm_layers(model):
        layer.train(True)
        if layer.training:  # a frozen one stays in eval mode: leave it alone
            layers.append(layer)
    if not layers or not plan:
        model.train(was_training)
        return 0, 0
    momenta = [layer.momentum for layer in layers]
    device = next(model.parameters(), torch.empty(0)).device
    seen = 0
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the batches
        for index, inputs in epoch_batches(split, plan[strategy.rank :: strategy.world_size]):
            model(*(t.to(device) for t in inputs))
            seen += len(index)
        if strategy.world_size > 1:
            _average_over_ranks(layers, strategy)
            seen = int(strategy.reduce_sum(torch.tensor([float(seen)])).item())
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return seen, len(layers)


def _hits(model: nn.Module, val: Split, reference: torch.Tensor | None) -> torch.Tensor | None:
    """Per validation row: predicted right (without labels: agrees with `reference`)."""
    if len(val) == 0 or (not val.labeled and reference is None):
        return None
    predicted = split_logits(model, val).argmax(1)
    return predicted == (val.y if val.labeled else reference)


def sign_test_p(improved: int, worsened: int) -> float:
    """One-sided exact p-value of `improved` or more of `improved + worsened` discordant
    rows going one way when either way is a fair coin (McNemar's exact test).

    Example:
        >>> sign_test_p(1, 0), sign_test_p(5, 0), sign_test_p(3, 3)
        (0.5, 0.03125, 0.65625)
    """
    n = improved + worsened
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(improved, n + 1)) / 2**n


def _mean_shift(layers: list[_BatchNorm], saved: list[tuple[torch.Tensor, ...]]) -> float:
    """How far the stored means were from the new ones, in stored standard deviations
    (the mean over channels and layers): what the recalibration changed."""
    shifts = []
    for layer, (mean, var, _) in zip(layers, saved):
        std = torch.sqrt(var.double() + layer.eps)
        shifts.append(((layer.running_mean.double() - mean.double()).abs() / std).mean())
    return float(torch.stack(shifts).mean()) if shifts else 0.0


def recalibrate_checked_(
    model: nn.Module,
    data: DataBundle,
    config: BatchNormConfig,
    *,
    where: str,
    batch_size: int = 64,
    seed: int = 0,
    strategy: Strategy | None = None,
    reference: torch.Tensor | None = None,
) -> dict[str, Any] | None:
    """Recalibrate (`recalibrate_batch_norm_` over `data.train`) and keep the new
    statistics only when they measurably help on validation data (the module
    docstring's paired test); every rank takes the driver's decision.

    Args:
        model: changed in place when the new statistics are kept.
        data: its train split is drawn from, its val split judges.
        config: the recipe's `batch_norm` table (off, how many rows, significance).
        where: what the report calls this point ("after training", "step 1: after
            pruning").
        reference: without labels, the predictions (class per val row) agreement is
            measured against (the unpruned model's); None and no labels, or no
            validation rows: nothing to measure, kept unjudged.

    Returns:
        The report's record (where, samples, layers, metric, before, after, improved,
        worsened, p_value, kept, mean_shift_sd), or None when it is off or the model
        has no BatchNorm.

    Example:
        >>> config = BatchNormConfig(samples=640)
        >>> record = recalibrate_checked_(model, data, config, where="end")  # doctest: +SKIP
        >>> record["kept"], record["before"], record["after"]  # doctest: +SKIP
        (True, 0.58, 0.82)
    """
    if not config.recalibrate or not batch_norm_layers(model):
        return None
    strategy = strategy or SingleProcess()
    layers = batch_norm_layers(model)
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in layers
    ]
    driver = strategy.is_driver
    old = _hits(model, data.val, reference) if driver else None
    seen, count = recalibrate_batch_norm_(
        model, data.train, config.samples, batch_size, seed, strategy
    )
    if count == 0:
        return None
    new = _hits(model, data.val, reference) if driver else None
    figures = [0.0] * 5  # judged, before, after, improved, worsened
    if old is not None and new is not None:
        figures = [1.0, float(old.float().mean()), float(new.float().mean()),
                   float((new & ~old).sum()), float((old & ~new).sum())]  # fmt: skip
    if strategy.world_size > 1:  # one decision for all ranks: the driver's numbers
        figures = strategy.share(figures)
    judged, before, after = bool(figures[0]), figures[1], figures[2]
    improved, worsened = int(figures[3]), int(figures[4])
    p_value = sign_test_p(improved, worsened)
    kept = not judged or (improved > worsened and p_value <= config.significance)
    shift = _mean_shift(layers, saved)
    if not kept:
        for layer, (mean, var, tracked) in zip(layers, saved):
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            layer.num_batches_tracked.copy_(tracked)
    record = {"where": where, "samples": seen, "layers": count, "metric": None,
              "before": None, "after": None, "kept": kept, "mean_shift_sd": shift}  # fmt: skip
    if judged:
        metric = "val_accuracy" if data.val.labeled else "val_agreement"
        record.update(metric=metric, before=before, after=after, improved=improved,
                      worsened=worsened, p_value=p_value)  # fmt: skip
    return record
