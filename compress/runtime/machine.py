"""What a latency figure was measured on: CPU model, ISA flags, ORT version, load."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
CPUINFO = Path("/proc/cpuinfo")
_X86 = ("x86_64", "amd64", "i386", "i686")


def _cpuinfo() -> dict[str, str]:
    """The first CPU's entries of /proc/cpuinfo; empty where it cannot be read
    (`isa_warning` says so in the report)."""
    info: dict[str, str] = {}
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def isa_warning() -> str | None:
    """A line for the report when this x86 CPU's instruction-set flags could not be
    read (no /proc/cpuinfo, say), else None.

    Without them the report's `environment.isa` is empty (not "no VNNI") and
    `int8_saturates` assumes the worst, so `reduce_range = "auto"` picks 7-bit weights.
    Other architectures have no x86 flags to read.
    """
    if platform.machine().lower() not in _X86 or "flags" in _cpuinfo():
        return None
    return (
        f"could not read this CPU's instruction-set flags ({CPUINFO} is missing, unreadable "
        "or has no 'flags' line): environment.isa is empty, and quantize's "
        'reduce_range = "auto" assumes a CPU without VNNI (7-bit weights)'
    )


def machine_info() -> dict[str, Any]:
    """CPU model, the int8/bf16-relevant ISA flags present, cores, ORT version."""
    import onnxruntime

    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cpu_count": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "providers_available": onnxruntime.get_available_providers(),
    }


VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def int8_saturates() -> bool:
    """Whether ORT's u8s8 int8 kernels can saturate on this CPU.

    Without VNNI, x86 multiplies u8 by s8 with `vpmaddubsw`, which adds two products
    into int16 and saturates: 255 * 127 * 2 > 32767. Measured here (AMD EPYC, AVX2):
    ORT's u8s8 results differed from exact int8 arithmetic in 5% of predictions, and
    not at all with 7-bit weights (ORT's `reduce_range`), which cannot overflow.
    """
    if platform.machine().lower() not in _X86:
        return False
    flags = set(_cpuinfo().get("flags", "").split())
    return not (flags & VNNI_FLAGS)


class LoadMeter:
    """CPU time used by *other* processes while a block runs, from /proc/stat.

    busy jiffies of the whole machine minus this process's own CPU time, as a
    share of one core over the wall time. None where /proc/stat is unavailable.
    """

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _busy_seconds(self) -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return (sum(values[:8]) - idle) / self._tick

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def start(self) -> None:
        import time

        self._wall, self._busy, self._own = (
            time.monotonic(),
            self._busy_seconds(),
            self._own_seconds(),
        )

    def other_share(self) -> float | None:
        """Cores' worth of CPU other processes used since `start` (0.5 = half a core)."""
        import time

        busy = self._busy_seconds()
        if busy is None or self._busy is None:
            return None
        wall = max(time.monotonic() - self._wall, 1e-9)
        other = (busy - self._busy) - (self._own_seconds() - self._own)
        return max(other, 0.0) / wall


def run_environment() -> dict[str, Any]:
    """What report.json records about the machine and the libraries of a run."""
    import onnx
    import onnxruntime
    import torch

    machine = machine_info()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": machine["cpu"],
        "isa": machine["isa"],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
