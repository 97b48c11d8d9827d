#!/usr/bin/env bash
# Every GPU path in one prepared run, for a machine with an NVIDIA GPU (the device tool's
# H200): what the machine has, the gpu-marked tests, one Fashion-MNIST (or digits)
# teacher epoch on CPU vs CUDA fp32 vs CUDA bf16, and ONNX Runtime's GPU providers where
# onnxruntime-gpu is installed. Writes everything under ${OUT:-gpu-checks}/ and prints
# a table. Runs on a CPU-only machine too (the CUDA rows are then skipped, and say so).
# Budget: under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu-checks}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
exec > >(tee "$OUT_DIR/gpu_checks.log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: none"
$PY - <<'PY'
import torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())
if torch.cuda.is_available():
    print("gpu 0:", torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())
print("onnxruntime", ort.__version__, "providers", ort.get_available_providers())
PY

echo "== gpu-marked tests"
timeout 180 $PY -m pytest -q -m gpu tests 2>&1 | tail -5

echo "== one teacher epoch: CPU vs CUDA fp32 vs CUDA bf16"
timeout 240 $PY scripts/gpu_epoch_timing.py --json "$OUT_DIR/epoch_timing.json"

echo "== ONNX Runtime providers (scripts/gpu_check.py)"
timeout 120 $PY scripts/gpu_check.py --rounds 5 --repeats 50 2>&1 | tail -20
echo "== done; files in $OUT_DIR"
