r"""Issue 17: compress vs Microsoft Olive on the same ResNet-18-shaped ONNX file.

Run with the Python of a separate Olive venv (olive-ai, torch==2.13.0 CPU,
onnxruntime==1.32.0; docs/olive.md says how it was installed); compress runs as
a subprocess through its own CLI (`--compress`, a compress venv's `compress`):

    OLIVE_DISABLE_TELEMETRY=1 OLIVE_VENV/bin/python scripts/olive_side_by_side.py \
        --work /tmp/olive-sbs --compress COMPRESS_VENV/bin/compress

Steps (all files under --work, nothing in the repository):
  train    a compress recipe (train ResNet-18 `depth = 18` on Fashion-MNIST, export);
           its final/model.onnx is "the user's file" (skipped when --model is given
           or work/resnet18.onnx exists)
  prepare  fashion.npz (raw uint8 Fashion-MNIST, official test split) and the 256
           calibration rows compress picks (same split and seed), for Olive
  olive    `olive run --config` twice: Olive's default OnnxStaticQuantization, and
           the settings closest to compress's (U8S8 QDQ, per-channel, MinMax)
  compress `compress run` of an ONNX-input recipe ([model] onnx, quantize static, export)
  bench    fp32, Olive and compress int8 timed interleaved in this one process
           (A B C A B C ...) at every profile; accuracy on the 10k test images,
           top-1 agreement and mean KL vs fp32; sizes; int8 node counts after ORT's
           optimizer. Writes work/results.json and work/results.md.
  profile  ORT's profiler on Olive's default and compress's int8 (op time shares, b1 t1)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")
SEED = 0
VAL_FRACTION = 0.15  # compress's DataConfig default
CALIBRATION_SAMPLES = 256  # compress's quantize.calibration.samples default
MAX_TRAIN = 12000  # the recipes' data.max_train_samples

TRAIN_RECIPE = """\
# ResNet-18 (torchvision layout) on Fashion-MNIST, briefly: the "user's model"
name = "resnet18-fashion"
seed = 0
[data]
source = "fashion-mnist"
max_train_samples = 12000
[model]
architecture = "resnet"
depth = 18
[runtime]
threads = 1
warmup = 3
repeats = 10
rounds = 2
[[stages]]
type = "train"
epochs = 2
batch_size = 128
optimizer = { name = "nesterov", lr = 0.05, weight_decay = 5e-4 }
schedule = { name = "onecycle", max_lr = 0.1 }
[[stages]]
type = "export"
"""

# What the compress user writes for an existing ONNX file (issue 17's [model] onnx).
# main has no [data] mean/std keys yet: compress normalises with the statistics of
# the recipe's training split, so the data table is the training run's (same source,
# same 12000-row subsample, same seed), which gives the model's own normalisation
# (checked: the run's final/model.contract.json has the training contract's mean/std).
COMPRESS_ONNX_RECIPE = """\
name = "resnet18-onnx-int8"
seed = 0
[model]
onnx = "{model}"
[data]
source = "fashion-mnist"
max_train_samples = 12000
[[stages]]
type = "quantize"
mode = "static"
[[stages]]
type = "export"
# int8 of this 82%-accurate model agrees with fp32 on ~95% of predictions (its -0.1 pt
# accuracy change aside): the default agreement_min 0.97 fails the stage (exit 3)
agreement_min = 0.9
"""

# The Olive user's data loader: Olive's data config has no image/npz loader, so a
# calibration dataset is a registered Python function (a `user_script`).
OLIVE_USER_SCRIPT = """\
import numpy as np
import torch
from olive.data.registry import Registry


@Registry.register_dataset()
def fashion_calibration(data_dir, mean, std, **kwargs):
    data = np.load(f"{data_dir}/fashion.npz")
    rows = np.load(f"{data_dir}/calibration_rows.npy")
    x = (data["x_train"][rows] * float(data["scale"]) - mean) / std
    x = torch.from_numpy(x.astype(np.float32))
    return [({"input": x[i]}, 0) for i in range(len(x))]
"""


def olive_config(work: Path, name: str, quantization: dict, mean: float, std: float) -> dict:
    """An `olive run` config: the ONNX file in, one OnnxStaticQuantization pass."""
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(work / "resnet18.onnx")},
        "systems": {
            "local_system": {
                "type": "LocalSystem",
                "accelerators": [
                    {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}
                ],
            }
        },
        "data_configs": [
            {
                "name": "calibration",
                "type": "DataContainer",
                "user_script": str(work / "olive" / "user_script.py"),
                "script_dir": str(work / "olive"),
                "load_dataset_config": {
                    "type": "fashion_calibration",
                    "data_dir": str(work),
                    "mean": mean,
                    "std": std,
                },
                "dataloader_config": {"batch_size": 32},
            }
        ],
        "passes": {
            "quantize": {
                "type": "OnnxStaticQuantization",
                "data_config": "calibration",
                **quantization,
            }
        },
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(work / "olive" / f"cache-{name}"),
        "output_dir": str(work / "olive" / f"out-{name}"),
        "log_severity_level": 0,
    }


# Row 1: what an Olive user gets (every quantization setting at its default).
# Row 2: the settings closest to compress's: u8 activations, s8 weights, QDQ,
# per-channel, MinMax, quant_pre_process (Olive's default already).
OLIVE_ROWS = {
    "default": {},
    "compress-like": {"activation_type": "uint8", "precision": "int8", "per_channel": True},
}


def code_lines(text: str) -> int:
    """Lines a user wrote: not blank, not a comment."""
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def run_timed(command: list[str], log: Path, env: dict | None = None, ok=(0,)) -> float:
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - started
    if done.returncode not in ok:
        sys.exit(f"{' '.join(command)} exited {done.returncode}; see {log}")
    return seconds


# ---------------------------------------------------------------------------- steps


def step_train(work: Path, compress: str) -> None:
    model = work / "resnet18.onnx"
    if model.exists():
        return
    (work / "train.toml").write_text(TRAIN_RECIPE)
    seconds = run_timed(
        [compress, "run", str(work / "train.toml"), "--out", str(work / "train-run")],
        work / "train.log",
    )
    shutil.copy(work / "train-run" / "final" / "model.onnx", model)
    print(f"train: {seconds:.0f} s -> {model}")


def read_idx(name: str) -> np.ndarray:
    with gzip.open(FASHION / name, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def stratified_split(labels: np.ndarray, fraction: float, seed: int):
    """compress.data.splits.stratified_split, copied (this runs in the Olive venv)."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        count = int(round(len(members) * fraction))
        if len(members) > 1:
            count = min(max(count, 1), len(members) - 1)
        held.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def calibration_rows(y_train: np.ndarray, max_train_samples: int | None = MAX_TRAIN) -> np.ndarray:
    """The training rows compress's quantize stage calibrates on: its train split
    (a stratified subsample of it under max_train_samples), then
    torch.randperm(seed)[:256]. Checked after the runs: compress's and the
    compress-like Olive model's activation scales must then be equal."""
    import torch

    train_idx, _ = stratified_split(y_train, VAL_FRACTION, SEED + 1)
    if max_train_samples is not None and max_train_samples < len(train_idx):
        fraction = 1.0 - max_train_samples / len(train_idx)
        kept, _ = stratified_split(y_train[train_idx], fraction, SEED + 2)
        train_idx = train_idx[kept]
    chosen = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(SEED))
    return train_idx[chosen[:CALIBRATION_SAMPLES].numpy()]


def contract(work: Path) -> dict:
    """The model's preprocessing (mean, std, scale) from compress's contract."""
    path = work / "resnet18.contract.json"
    if not path.exists():
        path = work / "train-run" / "final" / "model.contract.json"
    return json.loads(path.read_text())["preprocessing"]


def step_prepare(work: Path) -> None:
    pre = contract(work)
    x_train = read_idx("train-images-idx3-ubyte.gz")[:, None]
    y_train = read_idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    x_test = read_idx("t10k-images-idx3-ubyte.gz")[:, None]
    y_test = read_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    np.savez(
        work / "fashion.npz",
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        scale=np.float64(pre["scale"]),
    )  # fmt: skip
    np.save(work / "calibration_rows.npy", calibration_rows(y_train))
    print(f"prepare: fashion.npz ({len(x_train)} train, {len(x_test)} test), 256 calibration rows")


def find_onnx(folder: Path) -> Path:
    found = sorted(p for p in folder.rglob("*.onnx"))
    if len(found) != 1:
        sys.exit(f"expected one .onnx under {folder}, found {found}")
    return found[0]


def step_olive(work: Path) -> dict:
    pre = contract(work)
    mean, std = pre["mean"][0], pre["std"][0]
    folder = work / "olive"
    folder.mkdir(exist_ok=True)
    (folder / "user_script.py").write_text(OLIVE_USER_SCRIPT)
    olive = str(Path(sys.executable).parent / "olive")
    env = {**os.environ, "OLIVE_DISABLE_TELEMETRY": "1"}
    results = {}
    for name, settings in OLIVE_ROWS.items():
        for stale in (folder / f"out-{name}", folder / f"cache-{name}"):
            shutil.rmtree(stale, ignore_errors=True)
        config = olive_config(work, name, settings, mean, std)
        path = folder / f"config-{name}.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        seconds = run_timed([olive, "run", "--config", str(path)], folder / f"{name}.log", env=env)
        model = find_onnx(folder / f"out-{name}")
        shutil.copy(model, work / f"olive-{name}.onnx")
        data = model.with_name(model.name + ".data")  # Olive may write external data
        if data.exists():
            shutil.copy(data, work / f"olive-{name}.onnx.data")
        history = (folder / f"out-{name}" / "run_history.txt").read_text()
        pass_s = [float(v) for v in re.findall(r"duration_sec=([0-9.]+)", history)]
        results[name] = {
            "wall_s": seconds,
            "pass_s": sum(pass_s),  # Olive's own record of the quantization pass
            "settings": settings,
            "config": str(path),
        }
        print(f"olive {name}: {seconds:.1f} s")
    return results


def step_compress(work: Path, compress: str) -> dict:
    pre = contract(work)
    recipe = COMPRESS_ONNX_RECIPE.format(model=work / "resnet18.onnx")
    path = work / "compress.toml"
    path.write_text(recipe)
    out = work / "compress-run"
    shutil.rmtree(out, ignore_errors=True)
    # exit 1 = a budget missed: the recipe sets none, but the model is written either way
    seconds = run_timed(
        [compress, "run", str(path), "--out", str(out)], work / "compress.log", ok=(0, 1)
    )
    shutil.copy(out / "final" / "model.onnx", work / "compress-int8.onnx")
    report = json.loads((out / "report.json").read_text())
    used = json.loads((out / "final" / "model.contract.json").read_text())["preprocessing"]
    if (used["mean"], used["std"]) != (pre["mean"], pre["std"]):
        sys.exit(f"compress normalised with {used}, the model was trained with {pre}")
    print(f"compress: {seconds:.1f} s ({report['status']})")
    return {
        "wall_s": seconds,
        "recipe": recipe,
        "report": str(out / "report.json"),
        "status": report["status"],
        "stage_s": {stage["name"]: stage["duration_s"] for stage in report["stages"]},
    }


# ---------------------------------------------------------------------------- bench


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def optimized_ops(path: Path) -> dict:
    """Op counts of the graph ORT actually runs (after its optimizer)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(scratch) / "opt.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {
        "int8_conv": counts.get("QLinearConv", 0) + counts.get("ConvInteger", 0),
        "fp32_conv": sum(v for k, v in counts.items() if k in ("Conv", "FusedConv", "NchwcConv")),
        "int8_add": counts.get("QLinearAdd", 0),
        "quantize_linear": counts.get("QuantizeLinear", 0),
        "dequantize_linear": counts.get("DequantizeLinear", 0),
        "ops": counts,
    }


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(models: dict, x: np.ndarray, y: np.ndarray) -> dict:
    logits = {}
    for name, path in models.items():
        s = session(path, 2)
        logits[name] = np.concatenate(
            [s.run(None, {"input": x[i : i + 256]})[0] for i in range(0, len(x), 256)]
        )
    # the two u8s8 models: test images where their top-1 differs
    u8s8 = [logits[k].argmax(1) for k in ("olive-compress-like", "compress")]
    differ = int((u8s8[0] != u8s8[1]).sum())
    p_ref = softmax(logits["fp32"].astype(np.float64))
    top_ref = p_ref.argmax(1)
    out = {}
    for name, z in logits.items():
        p = softmax(z.astype(np.float64))
        kl = np.sum(p_ref * (np.log(p_ref + 1e-12) - np.log(p + 1e-12)), axis=1)
        out[name] = {
            "accuracy": float((p.argmax(1) == y).mean()),
            "agreement": float((p.argmax(1) == top_ref).mean()),
            "kl_mean": float(kl.mean()),
        }
    out["top1_differs_olive_compress_like_vs_compress"] = differ
    return out


def time_interleaved(
    models: dict,
    x: np.ndarray,
    threads: int,
    batch: int,
    rounds: int,
    repeats: int,
    baseline: str = "fp32",
) -> dict:
    """Per round, each model runs `repeats` times in turn (A B C D, then B C D A ...);
    speed-ups are medians of per-round p50 ratios vs `baseline`."""
    sessions = {name: session(path, threads) for name, path in models.items()}
    feed = {"input": x[:batch]}
    for s in sessions.values():  # warm-up
        for _ in range(5):
            s.run(None, feed)
    per_round = {name: [] for name in models}
    names = list(sessions)
    for r in range(rounds):
        # the order rotates every round (A B C D, B C D A, ...): no model always
        # follows the same one (a weight-dequantizing model leaves a cold cache)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            s = sessions[name]
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                s.run(None, feed)
                times.append(time.perf_counter() - t0)
            per_round[name].append(statistics.median(times) * 1000)
    out = {}
    for name, p50s in per_round.items():
        ratios = [f / m for f, m in zip(per_round[baseline], p50s)]
        out[name] = {
            "p50_ms": statistics.median(p50s),
            "round_p50_ms": p50s,
            "speedup": statistics.median(ratios),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
        }
    return out


def op_time_shares(path: Path, x: np.ndarray, runs: int = 100) -> dict:
    """Share of kernel time per op type (ORT's profiler, b1 t1, after 10 warm-up runs)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"input": x[:1]}
        for _ in range(10 + runs):
            s.run(None, feed)
        events = json.loads(Path(s.end_profiling()).read_text())
    per_run: list[dict] = []
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            per_run.append({})
        elif event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and per_run:
            op = event["args"]["op_name"]
            per_run[-1][op] = per_run[-1].get(op, 0) + event["dur"]
    totals: dict[str, float] = {}
    for run in per_run[-runs:]:  # the warm-up runs left out
        for op, us in run.items():
            totals[op] = totals.get(op, 0) + us
    whole = sum(totals.values())
    return {op: round(us / whole, 3) for op, us in sorted(totals.items(), key=lambda kv: -kv[1])}


def step_profile(work: Path) -> dict:
    pre = contract(work)
    data = np.load(work / "fashion.npz")
    x = ((data["x_test"][:1] * float(data["scale"]) - pre["mean"][0]) / pre["std"][0]).astype(
        np.float32
    )
    out = {
        name: op_time_shares(work / f"{name}.onnx", x)
        for name in ("olive-default", "compress-int8")
    }
    for name, shares in out.items():
        print(
            f"profile {name}: " + ", ".join(f"{op} {v:.0%}" for op, v in list(shares.items())[:4])
        )
    return out


def other_load() -> str:
    done = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True
    )
    return " | ".join(line.strip() for line in done.stdout.splitlines()[1:6])


def step_bench(work: Path, rounds: int, profiles: list[tuple[int, int]]) -> dict:
    pre = contract(work)
    data = np.load(work / "fashion.npz")
    x = ((data["x_test"] * float(data["scale"]) - pre["mean"][0]) / pre["std"][0]).astype(
        np.float32
    )
    y = data["y_test"]
    models = {
        "fp32": work / "resnet18.onnx",
        "olive-default": work / "olive-default.onnx",
        "olive-compress-like": work / "olive-compress-like.onnx",
        "compress": work / "compress-int8.onnx",
    }
    result = {"accuracy": accuracy(models, x, y), "timing": {}, "load": []}
    for threads, batch in profiles:
        repeats = 50 if batch == 1 else 10
        result["load"].append(f"t{threads} b{batch} before: {os.getloadavg()}; {other_load()}")
        result["timing"][f"b{batch}-t{threads}"] = time_interleaved(
            models, x, threads, batch, rounds, repeats
        )
        print(
            f"bench b{batch} t{threads}: "
            + ", ".join(
                f"{k} {v['speedup']:.2f}x"
                for k, v in result["timing"][f"b{batch}-t{threads}"].items()
            )
        )
    # the two u8s8 models head to head (b1 t1, 20 rounds): equal graphs should be ~1.0x
    pair = {k: models[k] for k in ("olive-compress-like", "compress")}
    head = time_interleaved(pair, x, 1, 1, 20, 100, baseline="olive-compress-like")
    result["compress_vs_olive_compress_like_b1_t1"] = head["compress"]
    print(f"compress vs olive-compress-like, b1 t1: {head['compress']['speedup']:.3f}x")
    result["size_bytes"] = {
        name: path.stat().st_size + (path.with_name(path.name + ".data").stat().st_size
                                     if path.with_name(path.name + ".data").exists() else 0)
        for name, path in models.items()
    }  # fmt: skip
    result["optimized_ops"] = {name: optimized_ops(path) for name, path in models.items()}
    result["same_activation_scales"] = same_scales(
        models["olive-compress-like"], models["compress"]
    )
    return result


def same_scales(a: Path, b: Path) -> dict:
    """Compare the activation scales of two QDQ models, tensor by tensor (equal
    when the calibration rows and preprocessing were the same)."""
    import onnx
    from onnx import numpy_helper

    def scales(path):
        model = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return {
            node.input[0]: float(inits[node.input[1]].reshape(-1)[0])
            for node in model.graph.node
            if node.op_type == "QuantizeLinear" and node.input[1] in inits
        }

    sa, sb = scales(a), scales(b)
    common = sorted(set(sa) & set(sb))
    diffs = [abs(sa[k] - sb[k]) / max(abs(sb[k]), 1e-30) for k in common]
    return {
        "common_tensors": len(common),
        "only_first": sorted(set(sa) - set(sb)),
        "only_second": sorted(set(sb) - set(sa)),
        "max_rel_diff": max(diffs) if diffs else None,
    }


# ---------------------------------------------------------------------------- report


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text()
    name = next(
        line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")
    )
    flags = set(next(line for line in info.splitlines() if line.startswith("flags")).split())
    import onnxruntime

    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in flags,
        "amx_int8": "amx_int8" in flags,
        "onnxruntime": onnxruntime.__version__,
    }


def write_markdown(work: Path, results: dict) -> str:
    b = results["bench"]
    acc, timing = b["accuracy"], b["timing"]
    names = ["fp32", "olive-default", "olive-compress-like", "compress"]
    wall = {
        "fp32": "-",
        "olive-default": f"{results['olive']['default']['wall_s']:.1f}",
        "olive-compress-like": f"{results['olive']['compress-like']['wall_s']:.1f}",
        "compress": f"{results['compress']['wall_s']:.1f}",
    }
    profiles = list(timing)
    head = "| model | wall s | " + " | ".join(f"{p} speed-up" for p in profiles)
    head += " | test acc | agreement | mean KL | size MB | int8 / fp32 convs | int8 adds |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for n in names:
        ops = b["optimized_ops"][n]
        cells = [n, wall[n]]
        for p in profiles:
            t = timing[p][n]
            spread = f"{t['speedup_min']:.2f}-{t['speedup_max']:.2f}"
            cells.append(f"{t['speedup']:.2f}x ({spread}), {t['p50_ms']:.2f} ms")
        cells += [
            f"{acc[n]['accuracy'] * 100:.2f}%",
            f"{acc[n]['agreement'] * 100:.2f}%",
            f"{acc[n]['kl_mean']:.5f}",
            f"{b['size_bytes'][n] / 1e6:.1f}",
            f"{ops['int8_conv']} / {ops['fp32_conv']}",
            f"{ops['int8_add']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (work / "results.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/olive-sbs"))
    parser.add_argument("--compress", default="compress", help="a compress venv's compress")
    parser.add_argument(
        "--model",
        type=Path,
        help="the train recipe's final/model.onnx from elsewhere (its model.contract.json "
        "beside it), instead of training here",
    )
    parser.add_argument("--steps", default="train,prepare,olive,compress,bench,profile")
    parser.add_argument("--rounds", type=int, default=8, help="timing rounds (bench)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (wall time)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    steps = args.steps.split(",")
    if args.model:  # a final/model.onnx of the train recipe, with its contract beside it
        shutil.copy(args.model, work / "resnet18.onnx")
        shutil.copy(args.model.with_name("model.contract.json"), work / "resnet18.contract.json")
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["machine"] = machine()
    if "train" in steps:
        step_train(work, args.compress)
    if "prepare" in steps:
        step_prepare(work)
    # wall times drift with the other processes on the machine: the commands run
    # --repeat times, alternating (Olive, Olive, compress, Olive, ...), medians kept
    walls: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        if "olive" in steps:
            results["olive"] = step_olive(work)
            for name, row in results["olive"].items():
                walls.setdefault(f"olive {name}", []).append(row["wall_s"])
        if "compress" in steps:
            results["compress"] = step_compress(work, args.compress)
            walls.setdefault("compress", []).append(results["compress"]["wall_s"])
    if "olive" in steps:
        for name, row in results["olive"].items():
            row["wall_s_runs"] = walls[f"olive {name}"]
            row["wall_s"] = statistics.median(row["wall_s_runs"])
    if "compress" in steps:
        results["compress"]["wall_s_runs"] = walls["compress"]
        results["compress"]["wall_s"] = statistics.median(walls["compress"])
    if "bench" in steps:
        profiles = [(1, 1), (2, 1), (1, 32), (2, 32)]
        results["bench"] = step_bench(work, args.rounds, profiles)
    if "profile" in steps:
        results["profile_b1_t1"] = step_profile(work)
    results["user_wrote"] = {
        "olive": {
            "config_json_lines": code_lines(
                json.dumps(olive_config(work, "x", OLIVE_ROWS["compress-like"], 0, 1), indent=2)
            ),
            "user_script_lines": code_lines(OLIVE_USER_SCRIPT),
        },
        "compress": {"recipe_lines": code_lines(COMPRESS_ONNX_RECIPE)},
    }
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    if "bench" in results and "olive" in results and "compress" in results:
        print(write_markdown(work, results))


if __name__ == "__main__":
    main()
