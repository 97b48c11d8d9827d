"""How a split becomes training batches: the one hook between data and the loop.

A split of fixed-size samples (images, features) is cut into shuffled batches of
`batch_size`, exactly as the loop always did (one `randperm` from the loop's seeded
generator). A split with `lengths` (padded token ids and their mask) gets
length-bucketed batches instead: the shuffled rows are cut into buckets of
`BUCKET_BATCHES` batches, each bucket sorted by length and cut into batches, and the
batches shuffled; each batch is then trimmed to its longest row (dynamic padding),
so a batch of short reviews does not pay for the longest one in the split.
A lazy split (image files) decodes each epoch's batches in a DataLoader
(`epoch_batches`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from compress.data.bundle import Split

BUCKET_BATCHES = 50  # batches per sorting bucket: lengths close within a batch, order random


def batch_plan(split: Split, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Row indices of every batch of one epoch, in the order to train on them.

    Example:
        >>> split = Split(torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64))
        >>> [len(b) for b in batch_plan(split, 2, torch.Generator().manual_seed(0))]
        [2, 2, 1]
    """
    order = torch.randperm(len(split), generator=generator)
    if split.lengths is None:
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    bucket = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        rows = order[start : start + bucket]
        rows = rows[torch.argsort(split.lengths[rows], stable=True)]
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in shuffle.tolist()]


def take_batch(split: Split, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The inputs of rows `index`; for a split with `lengths`, trimmed to the longest
    of those rows (padding columns every row has are dropped)."""
    inputs = split.take(index)
    if split.lengths is None:
        return inputs
    width = max(int(split.lengths[index].max()), 1)
    return tuple(t[:, :width] for t in inputs)


def epoch_batches(
    split: Split, plan: list[torch.Tensor]
) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
    """(row indices, inputs) of each batch of `plan`, in order.

    In memory each batch is `take_batch` of its rows; a lazy split decodes the
    batches in a DataLoader over the plan (`Split.batches`), so `num_workers`
    processes decode ahead of the step that trains on them.

    Example:
        >>> split = Split(torch.arange(4.0)[:, None], torch.zeros(4, dtype=torch.int64))
        >>> [x[0].flatten().tolist() for _, x in epoch_batches(split, [torch.tensor([3, 1])])]
        [[3.0, 1.0]]
    """
    if not split.lazy:
        for index in plan:
            yield index, take_batch(split, index)
        return
    for index, (inputs, _) in zip(plan, split.batches(plan)):
        yield index, inputs
