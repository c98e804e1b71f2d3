"""MATLAB-compatible image helpers that pyiqa reimplements: ``fspecial`` and bicubic ``imresize``.

``imresize_matrix`` builds the (out, in) resampling matrix of pyiqa's ``imresize`` (MATLAB bicubic,
a = -0.5, antialiasing when downscaling, symmetric "reflect" padding that repeats the edge
sample) so a separable resize is two matrix products: ``A_h @ img @ A_w.T``. Weights are computed
in float32, as pyiqa casts its inputs to float32 before resizing.
"""

from __future__ import annotations

import math

import numpy as np


def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``, rounded through float32 as pyiqa stores it."""
    m = (size - 1.0) / 2.0
    y, x = np.ogrid[-m : m + 1, -m : m + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    h /= h.sum()
    return h.astype(np.float32).astype(np.float64)


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
    far = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2))
    return (near + far).astype(x.dtype)


def imresize_matrix(
    in_size: int, out_size: int, scale: float, antialiasing: bool = True
) -> np.ndarray:
    """(out_size, in_size) float32 matrix of pyiqa's ``resize_1d`` (MATLAB bicubic)."""
    kernel_size = 4
    aa = scale if (antialiasing and scale < 1) else 1.0
    if aa != 1.0:
        kernel_size = math.ceil(kernel_size / aa)
    kernel_size += 2
    pos = np.linspace(0, out_size - 1, out_size, dtype=np.float32)
    pos = (pos + np.float32(0.5)) / np.float32(scale) - np.float32(0.5)
    base = np.floor(pos) - (kernel_size // 2) + 1
    dist = pos - base
    offsets = dist[None, :] - np.arange(kernel_size, dtype=np.float32)[:, None]
    weight = _cubic(offsets * np.float32(aa))
    weight = weight / weight.sum(axis=0, keepdims=True)
    base = base.astype(np.int64)
    matrix = np.zeros((out_size, in_size), np.float64)
    for j in range(out_size):
        for k in range(kernel_size):
            src = base[j] + k
            # MATLAB symmetric padding: -1 -> 0, -2 -> 1, n -> n-1, n+1 -> n-2.
            if src < 0:
                src = -src - 1
            elif src >= in_size:
                src = 2 * in_size - src - 1
            matrix[j, src] += weight[k, j]
    return matrix.astype(np.float32)
