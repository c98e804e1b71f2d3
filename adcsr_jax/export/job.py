"""One export end to end: convert, save, verify against JAX, measure (the ``adcsr export`` core)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from adcsr_jax.export.benchmark import Measurement, file_size_mb, measure_runtime
from adcsr_jax.export.graphs import ExportModel
from adcsr_jax.export.verify import Accuracy, compare_runs

FORMATS = ("tflite", "onnx")


def convert(
    model: ExportModel,
    fmt: str,
    precision: str,
    out: str | Path,
    lr_size: int = 128,
    dynamic_batch: bool = False,
    layout: str = "nhwc",
    calibration: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write ``model`` as ``fmt`` at ``precision`` to ``out`` (input (B, lr, lr, 3) in [0, 1])."""
    if lr_size % 16:
        raise ValueError(f"LR size {lr_size} must be a multiple of 16 (the UNet's skips need it)")
    shape = (None if dynamic_batch else 1, lr_size, lr_size, 3)
    if fmt == "tflite":
        from adcsr_jax.export import tflite

        if layout != "nhwc":
            raise ValueError("TFLite exports are NHWC (the TFLite convention)")
        data = tflite.convert(model.apply, model.params, shape, precision, calibration)
        return tflite.save(data, out)
    if fmt == "onnx":
        from adcsr_jax.export import onnx as onnx_export

        if precision == "w8a16":
            raise ValueError(
                "ONNX W8A16 is done by Qualcomm AI Hub's quantiser: export fp32 ONNX and run "
                "`adcsr profile --model FILE --precision w8a16 --calib DIR`"
            )
        return onnx_export.export(model.apply, model.params, shape, out, precision, layout)
    raise ValueError(f"format {fmt!r}: expected one of {FORMATS}")


def runner(path: str | Path, fmt: str, layout: str = "nhwc") -> Callable[[np.ndarray], np.ndarray]:
    """NHWC-in / NHWC-out callable running the exported file on CPU."""
    if fmt == "tflite":
        from adcsr_jax.export.tflite import TFLiteRunner

        return TFLiteRunner(path)
    from adcsr_jax.export.onnx import ONNXRunner

    run = ONNXRunner(path)
    if layout == "nchw":
        return lambda x: np.transpose(run(np.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1))
    return run


def export_and_check(
    model: ExportModel,
    fmt: str,
    precision: str,
    out: str | Path,
    check_images: Sequence[np.ndarray],
    lr_size: int = 128,
    dynamic_batch: bool = False,
    layout: str = "nhwc",
    calibration: Sequence[np.ndarray] | None = None,
    measure: bool = True,
    runs: int = 5,
    log: Callable[[str], None] = print,
) -> Measurement:
    """Convert, verify on ``check_images`` ((1, lr, lr, 3) in [0, 1]) and measure one export."""
    start = time.perf_counter()
    path = convert(model, fmt, precision, out, lr_size, dynamic_batch, layout, calibration)
    convert_s = time.perf_counter() - start
    log(f"[export] wrote {path} ({file_size_mb(path):.1f} MB) in {convert_s:.0f} s")
    accuracy: Accuracy | None = None
    if check_images:
        run = runner(path, fmt, layout)
        accuracy = compare_runs(
            lambda x: model.postprocess(run(x), x), model.jax_fn(), check_images
        )
        log(f"[export] {fmt} {precision} vs JAX: {accuracy.summary()}")
    latency = memory = float("nan")
    if measure:
        shape = (1, lr_size, lr_size, 3) if layout == "nhwc" else (1, 3, lr_size, lr_size)
        latency, memory = measure_runtime(path, fmt, shape, runs=runs)
        log(f"[export] CPU latency {latency:.1f} ms (median of {runs}), +{memory:.0f} MB peak")
    return Measurement(
        model.name, fmt, precision, file_size_mb(path), latency, memory, accuracy, convert_s
    )
