"""Accuracy of an exported model against the JAX function it came from.

fp32 exports must match JAX to ``max|y - y_jax| <= 1e-4`` of the output range (SR images in
[0, 1], so range 1); quantised ones report PSNR against the JAX output (peak 1), target >= 35 dB
at W8A16.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FP32_REL_TOL = 1e-4
W8A16_PSNR_TARGET = 35.0


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Exported-vs-JAX agreement on a set of images."""

    max_abs: float
    rel_max_abs: float  # max_abs / range of the JAX output
    psnr: float  # dB, peak = range of the JAX output
    images: int

    def passes_fp32(self, tol: float = FP32_REL_TOL) -> bool:
        return self.rel_max_abs <= tol

    def summary(self) -> str:
        return (
            f"max|diff| {self.max_abs:.3g} ({self.rel_max_abs:.3g} of range), "
            f"PSNR {self.psnr:.2f} dB over {self.images} image(s)"
        )


def compare(reference: np.ndarray, output: np.ndarray, peak: float | None = None) -> Accuracy:
    """Agreement of ``output`` with ``reference`` (same shape, any layout).

    ``peak`` is the output's nominal range (1.0 for images in [0, 1]); None uses the range of
    ``reference`` itself.
    """
    reference = np.asarray(reference, np.float64)
    output = np.asarray(output, np.float64)
    if reference.shape != output.shape:
        raise ValueError(f"exported output shape {output.shape} != JAX output {reference.shape}")
    if not np.all(np.isfinite(output)):
        raise ValueError("exported model produced non-finite values")
    span = float(peak) if peak else float(reference.max() - reference.min()) or 1.0
    diff = np.abs(output - reference)
    mse = float(np.mean(diff**2))
    psnr = float("inf") if mse == 0 else 10.0 * np.log10(span**2 / mse)
    max_abs = float(diff.max())
    return Accuracy(max_abs, max_abs / span, psnr, int(reference.shape[0]))


def compare_runs(
    run_exported: Callable[[np.ndarray], np.ndarray],
    run_jax: Callable[[np.ndarray], np.ndarray],
    images: Sequence[np.ndarray],
    peak: float | None = 1.0,
) -> Accuracy:
    """Run both on each ``(1, H, W, C)`` image (or batch) and pool the comparison; ``peak``
    defaults to 1.0, the range of the SR images every export here returns."""
    refs, outs = [], []
    for x in images:
        refs.append(np.asarray(run_jax(x)))
        outs.append(np.asarray(run_exported(x)))
    return compare(np.concatenate(refs), np.concatenate(outs), peak)


def round_weights_int8(params: Any) -> Any:
    """``params`` with every conv / dense kernel rounded to symmetric per-output-channel int8
    (what TFLite's W8A16 stores), everything else unchanged. Running JAX with these gives the
    accuracy floor of int8 weights alone, to tell weight from activation quantisation error."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(params)
    out = {}
    for key, value in flat.items():
        value = np.asarray(value, np.float32)
        if key[-1] == "kernel" and value.ndim >= 2:
            axes = tuple(range(value.ndim - 1))
            scale = np.abs(value).max(axis=axes, keepdims=True) / 127.0
            scale = np.where(scale == 0, 1.0, scale)
            value = (np.round(value / scale) * scale).astype(np.float32)
        out[key] = value
    return traverse_util.unflatten_dict(out)


def int8_weight_floor(
    apply_fn: Callable[[Any, Any], Any], params: Any, images: Sequence[np.ndarray]
) -> Accuracy:
    """JAX with int8-rounded weights vs JAX: the best a W8A16 export can reach on ``images``."""
    import jax

    fn = jax.jit(apply_fn)
    rounded = round_weights_int8(params)
    return compare_runs(lambda x: fn(rounded, x), lambda x: fn(params, x), images)
