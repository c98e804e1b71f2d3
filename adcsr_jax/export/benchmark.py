"""File size, CPU latency and peak memory of exported models, and the Table C.3-style report.

Latency and memory are measured in a fresh subprocess (``python -m adcsr_jax.export.measure``)
so that JAX, TensorFlow or an earlier model do not inflate the peak RSS: memory is the peak
resident set of that process minus its resident set after importing the runtime, i.e. what
loading and running the model adds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from adcsr_jax.export.verify import Accuracy


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One exported file: storage, median CPU latency, added peak memory, accuracy vs JAX."""

    model: str  # 'student' / 'teacher'
    fmt: str  # 'tflite' / 'onnx'
    precision: str
    file_mb: float
    latency_ms: float
    memory_mb: float
    accuracy: Accuracy | None = None
    convert_s: float | None = None


def file_size_mb(path: str | Path) -> float:
    """Size in MB (1e6 bytes) of ``path`` plus its ONNX external-data sidecar, if any."""
    path = Path(path)
    total = path.stat().st_size
    for extra in (path.with_name(path.name + ".data"), path.with_suffix(".onnx.data")):
        if extra.exists() and extra != path:
            total += extra.stat().st_size
            break
    return total / 1e6


def measure_runtime(
    path: str | Path, fmt: str, shape: Sequence[int], runs: int = 5, threads: int | None = None
) -> tuple[float, float]:
    """(median latency ms, added peak memory MB) of running ``path`` on random input of ``shape``."""
    cmd = [
        sys.executable,
        "-m",
        "adcsr_jax.export.measure",
        "--format",
        fmt,
        "--model",
        str(path),
        "--shape",
        ",".join(str(int(s)) for s in shape),
        "--runs",
        str(runs),
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {path} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["latency_ms"]), float(result["memory_mb"])


def _reduction(teacher: float, student: float) -> str:
    if not (math.isfinite(teacher) and math.isfinite(student)) or teacher <= 0:
        return "-"
    return f"{100.0 * (1.0 - student / teacher):.0f}%"


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _acc(m: Measurement) -> str:
    if m.accuracy is None:
        return "-"
    return f"{m.accuracy.psnr:.1f} dB / {m.accuracy.rel_max_abs:.1e}"


def table(rows: Sequence[Measurement]) -> str:
    """Markdown table in Table C.3's layout: teacher vs student per export, with reduction rates.

    Columns: latency (ms, CPU median), memory (MB, added peak RSS), storage (MB), accuracy
    against JAX (PSNR / max abs error relative to the output range).
    """
    lines = [
        "| Format | Precision | Model | Latency (ms) | Memory (MB) | Storage (MB) "
        "| vs JAX (PSNR / rel. max err) |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    groups: dict[tuple[str, str], dict[str, Measurement]] = {}
    for m in rows:
        groups.setdefault((m.fmt, m.precision), {})[m.model] = m
    for (fmt, precision), models in groups.items():
        for name in ("teacher", "student"):
            m = models.get(name)
            if m is None:
                continue
            lines.append(
                f"| {fmt} | {precision} | {name} | {_fmt(m.latency_ms)} | {_fmt(m.memory_mb)} "
                f"| {_fmt(m.file_mb)} | {_acc(m)} |"
            )
        if "teacher" in models and "student" in models:
            t, s = models["teacher"], models["student"]
            lines.append(
                f"| {fmt} | {precision} | reduction | {_reduction(t.latency_ms, s.latency_ms)} "
                f"| {_reduction(t.memory_mb, s.memory_mb)} | {_reduction(t.file_mb, s.file_mb)} | |"
            )
    return "\n".join(lines)
