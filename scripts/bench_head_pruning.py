"""Does head and FFN pruning of a BERT encoder make it faster on ONNX Runtime (CPU)?

A random BertModel of MiniLM's width (hidden 384, FFN 1536) with 6 heads of 64 and
a mean-pool classifier is pruned by compress's StructuredPruner (l1, one step) to
3 heads per layer (head_ratio 0.5, FFN kept), and to 3 heads plus FFN 1536 -> 768
(ffn_ratio 0.5). Each is exported with compress's exporter and the three are timed
interleaved (dense, heads, heads+FFN in every round) on one thread; the speed-up is
the median over rounds of dense p50 / pruned p50, with its min-max spread. MACs and
parameters come from compress.models.stats.

Run: python scripts/bench_head_pruning.py [--layers 3] [--rounds 7] [--repeats 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.models.signature import InputSignature
from compress.models.stats import count_macs, count_params
from compress.pruning.structured import StructuredPruner
from compress.runtime.machine import machine_info
from compress.runtime.onnx_export import check_parity, export_onnx

VOCAB = 1000


class Encoder(nn.Module):
    """BertModel (eager attention, no pooler) + classifier over mean-pooled tokens."""

    def __init__(self, layers: int, heads: int):
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(
            vocab_size=VOCAB, hidden_size=384, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=1536, max_position_embeddings=128,
        )  # fmt: skip
        config._attn_implementation = "eager"
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(384, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return self.classifier((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0))


def pruned(dense: nn.Module, head_ratio: float, ffn_ratio: float) -> nn.Module:
    model = copy.deepcopy(dense)
    example = (torch.randint(0, VOCAB, (2, 16)), torch.ones(2, 16, dtype=torch.long))
    StructuredPruner(
        model, example, 0.5, 1, "linear", "l1", [model.classifier],
        round_to=8, head_ratio=head_ratio, ffn_ratio=ffn_ratio,
    ).step()  # fmt: skip
    return model.eval()


def time_interleaved(paths, feed, rounds: int, repeats: int) -> list[list[float]]:
    """p50 (ms) of each model in each round; models alternate within a round."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for p in paths]  # fmt: skip
    for session in sessions:
        for _ in range(5):
            session.run(None, feed)
    p50 = [[] for _ in sessions]
    for _ in range(rounds):
        for index, session in enumerate(sessions):
            times = []
            for _ in range(repeats):
                start = time.perf_counter_ns()
                session.run(None, feed)
                times.append((time.perf_counter_ns() - start) / 1e6)
            p50[index].append(statistics.median(times))
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sequence", type=int, default=64)
    args = parser.parse_args()
    machine = machine_info()
    print(f"CPU {machine['cpu']} ({' '.join(machine['isa'])}), "
          f"onnxruntime {machine['onnxruntime']}, torch {torch.__version__}")  # fmt: skip
    torch.manual_seed(0)
    dense = Encoder(args.layers, args.heads).eval()
    variants = {
        "dense": dense,
        "heads 0.5": pruned(dense, 0.5, 0.0),
        "heads 0.5 + ffn 0.5": pruned(dense, 0.5, 0.5),
    }
    signature = InputSignature.text(VOCAB)
    sizes = {"batch": args.batch, "sequence": args.sequence}
    generator = np.random.default_rng(0)
    feed = {
        "input_ids": generator.integers(0, VOCAB, (args.batch, args.sequence), dtype=np.int64),
        "attention_mask": np.ones((args.batch, args.sequence), dtype=np.int64),
    }
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for index, (name, model) in enumerate(variants.items()):
            path = export_onnx(model, signature, Path(scratch) / f"m{index}.onnx")
            parity = check_parity(model, path, signature, [1, 3], atol=1e-4, rtol=1e-4)
            worst = max(parity.values())
            layer = model.encoder.encoder.layer[0]
            print(f"{name:>20}: heads {layer.attention.self.num_attention_heads}, FFN "
                  f"{layer.intermediate.dense.out_features}, params {count_params(model):,}, "
                  f"MACs {count_macs(model, signature):,}, ONNX parity {worst:.1e}")  # fmt: skip
            paths.append(path)
        p50 = time_interleaved(paths, feed, args.rounds, args.repeats)
    print(f"\nbatch {sizes['batch']}, sequence {sizes['sequence']}, 1 thread, "
          f"{args.rounds} interleaved rounds of {args.repeats} runs")  # fmt: skip
    for name, rounds in zip(variants, p50):
        ratios = [d / p for d, p in zip(p50[0], rounds)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(f"{name:>20}: p50 {statistics.median(rounds):7.2f} ms, speed-up vs dense "
              f"{statistics.median(ratios):.2f}x ({spread})")  # fmt: skip


if __name__ == "__main__":
    main()
