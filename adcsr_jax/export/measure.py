"""Subprocess entry: time one exported model on CPU and report its added peak memory as JSON.

``python -m adcsr_jax.export.measure --format tflite --model m.tflite --shape 1,128,128,3``
prints ``{"latency_ms": median, "memory_mb": peak RSS - RSS after importing the runtime}``.
Run by :func:`adcsr_jax.export.benchmark.measure_runtime`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss is not None else _peak_mb()


def _peak_mb() -> float:
    """Peak RSS of this process image: VmHWM (ru_maxrss would carry over the high-water mark of
    the parent that forked us, e.g. a benchmark holding a whole model)."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--format", choices=("tflite", "onnx"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", required=True, help="input shape, e.g. 1,128,128,3")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    x = np.random.default_rng(0).uniform(0.0, 1.0, shape).astype(np.float32)
    # Import everything first: the baseline holds the runtime, the measurement the model.
    if args.format == "tflite":
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401

        from adcsr_jax.export.tflite import TFLiteRunner as Runner
    else:
        import onnxruntime  # noqa: F401

        from adcsr_jax.export.onnx import ONNXRunner as Runner
    baseline = _rss_mb()
    runner = Runner(args.model, num_threads=args.threads)
    runner(x)  # warm-up (allocations, delegate set-up)
    times = []
    for _ in range(max(1, args.runs)):
        start = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - start)
    result = {
        "latency_ms": 1000.0 * statistics.median(times),
        "memory_mb": max(0.0, _peak_mb() - baseline),
        "runs": len(times),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
