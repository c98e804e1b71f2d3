"""Banded resize matrices as taps: ``(index, weight)`` pairs per output row, applied by gathers.

The interpolation matrices of ``resize.resize_matrix`` (``F.interpolate`` without antialias) have
few non-zeros per row, in one contiguous band: 2 (bilinear), 4 (bicubic) or ``ceil(in / out) + 1``
(area). A dense ``(out, in)`` matmul spends ``in`` multiply-adds per output pixel where the band
needs at most ``taps``; here each row keeps its band (start index + ``taps`` weights, zeros past
its end) and the resize is ``taps`` row gathers and multiply-adds per axis. The result is the
matmul's up to float summation order (the same products, added in band order).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def max_taps(in_size: int, out_size: int) -> int:
    """Upper bound on the band width of any mode for ``in_size -> out_size`` (``>= 4``)."""
    return max(4, math.ceil(in_size / max(out_size, 1)) + 1)


def matrix_taps(mat: np.ndarray, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(..., out, in)`` matrices -> start-indexed taps ``(..., out, taps)`` int32 / float32.

    Raises if a row's non-zero band is wider than ``taps``. All-zero rows (bucket padding) get
    index 0 and zero weights.
    """
    nz = mat != 0
    any_nz = nz.any(axis=-1)
    n_in = mat.shape[-1]
    first = np.where(any_nz, np.argmax(nz, axis=-1), 0)
    last = np.where(any_nz, n_in - 1 - np.argmax(nz[..., ::-1], axis=-1), 0)
    width = np.where(any_nz, last - first + 1, 0)
    if width.max(initial=0) > taps:
        raise ValueError(f"resize band of {width.max()} taps exceeds the bound {taps}")
    idx = first[..., None] + np.arange(taps)
    inside = idx <= last[..., None]
    idx = np.where(inside, np.minimum(idx, n_in - 1), 0)
    w = np.where(inside, np.take_along_axis(mat, idx, axis=-1), 0).astype(np.float32)
    return idx.astype(np.int32), w


def _apply_rows(x: jax.Array, idx: jax.Array, w: jax.Array) -> jax.Array:
    """Resizes ``x`` along axis 1 with per-sample ``(B, out, taps)`` taps (whole-row gathers)."""
    out = None
    for t in range(idx.shape[-1]):
        shape = (x.shape[0], idx.shape[1]) + (1,) * (x.ndim - 2)
        i = idx[:, :, t].reshape(shape)
        term = w[:, :, t].reshape(shape) * jnp.take_along_axis(x, i, axis=1)
        out = term if out is None else out + term
    return out


def apply_taps(
    x: jax.Array, idx_h: jax.Array, w_h: jax.Array, idx_w: jax.Array, w_w: jax.Array
) -> jax.Array:
    """``resize.apply_resize`` with per-sample taps (NHWC): columns first, then rows.

    Both passes gather whole rows of the image: the column pass runs on the ``(B, W, H, C)``
    transpose. On XLA:CPU gathering 3-float pixels along W is slow, and ending on the row pass
    lets the consumers (noise, masks) fuse with it cheaply (``scripts/bench_data.py``: 4x less
    time for the first resize + noise at the 768 bucket). The separable sum is the same; only
    the float rounding order differs from rows-first (~1e-7).
    """
    y = jnp.swapaxes(x.astype(jnp.float32), 1, 2)
    y = jnp.swapaxes(_apply_rows(y, idx_w, w_w), 1, 2)
    return _apply_rows(y, idx_h, w_h)
