"""``torch.nn.functional.interpolate`` (align_corners=False, no antialias) as two matmuls.

A resize along one axis is a linear map, so it is an ``(out, in)`` matrix. The matrices are built on
the host in numpy float32 with the same index and weight arithmetic as PyTorch's CPU kernels
(``area_pixel_compute_source_index``, ``guard_index_and_lambda``, cubic A = -0.75 with clamped border
taps, ``adaptive_avg_pool`` start/end indices for ``area``) and applied on the device with
``einsum`` at HIGHEST precision. ``jax.image.resize`` differs (Keys A = -0.5 and antialiasing),
which is why this exists.

The one resize module of the package: the models (OSEDiff's x4 bicubic input, the MUSIQ and
MANIQA preprocessing), inference, the metrics and the degradation pipeline all build their
matrices here. Three ways to use it:

* ``resize(x, size=..., scale_factor=..., mode=...)``: a drop-in for ``F.interpolate`` on NHWC arrays.
  With ``scale_factor`` the output size is ``floor(in * s)`` and the coordinate map uses ``1 / s``
  itself (PyTorch's default ``recompute_scale_factor=None``); ``area`` ignores the factor and only
  uses the output size, as ``adaptive_avg_pool2d`` does.
* ``resize_matrix(..., pad_in, pad_out)`` + ``apply_resize``: the matrices zero-padded to fixed
  bucket sizes, so one compiled program serves every valid size inside a bucket (the degradation
  pipeline's random resizes). Rows beyond the valid output are zero; columns beyond the valid input
  are zero, so whatever sits in the padding of the input never leaks into the result.
* ``imresize_matrix``: MATLAB's bicubic ``imresize`` as pyiqa reimplements it (a = -0.5,
  antialiasing when downscaling, symmetric padding), a different kernel used by NIQE.
* ``bicubic_resize(x, scale=... | size=...)``: bicubic in the input's dtype (bf16 stays bf16), on
  any ``(..., H, W, C)`` array, with the matrices cached per size (model code).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("area", "bilinear", "bicubic")
_CUBIC_A = np.float32(-0.75)


def _scale(in_size: int, out_size: int, scale_factor: float | None) -> np.float32:
    """PyTorch's ``compute_scales_value``: ``1/scale`` when given, else ``in/out`` (float32)."""
    if scale_factor is not None and scale_factor > 0:
        return np.float32(1.0 / scale_factor)
    return np.float32(in_size) / np.float32(out_size)


def _cubic_coeffs(t: np.ndarray) -> np.ndarray:
    """Weights of the taps at offsets -1, 0, 1, 2 for fractional positions ``t`` (float32)."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + np.float32(1)

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    one = np.float32(1)
    return np.stack([far(t + one), near(t), near(one - t), far(2 * one - t)], axis=-1)


def resize_matrix(
    in_size: int,
    out_size: int,
    mode: str,
    scale_factor: float | None = None,
    pad_in: int | None = None,
    pad_out: int | None = None,
) -> np.ndarray:
    """The ``(pad_out, pad_in)`` float32 matrix that resizes one axis of length ``in_size``.

    ``scale_factor`` is the factor the caller passed to ``F.interpolate`` (only used by the
    coordinate map of bilinear/bicubic); ``pad_in``/``pad_out`` default to the valid sizes.
    """
    if mode not in MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {MODES}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    pad_in = in_size if pad_in is None else pad_in
    pad_out = out_size if pad_out is None else pad_out
    if pad_in < in_size or pad_out < out_size:
        raise ValueError(
            f"padding ({pad_out}, {pad_in}) smaller than sizes ({out_size}, {in_size})"
        )
    mat = np.zeros((pad_out, pad_in), np.float32)
    dst = np.arange(out_size)
    if mode == "area":
        start = (dst * in_size) // out_size
        end = ((dst + 1) * in_size + out_size - 1) // out_size
        for i, (s, e) in enumerate(zip(start, end)):
            mat[i, s:e] = np.float32(1) / np.float32(e - s)
        return mat
    scale = _scale(in_size, out_size, scale_factor)
    real = scale * (dst.astype(np.float32) + np.float32(0.5)) - np.float32(0.5)
    if mode == "bilinear":
        real = np.maximum(real, np.float32(0))
    index = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    lam = np.clip(real - index.astype(np.float32), np.float32(0), np.float32(1))
    if mode == "bilinear":
        index1 = index + (index < in_size - 1)
        np.add.at(mat, (dst, index), np.float32(1) - lam)
        np.add.at(mat, (dst, index1), lam)
        return mat
    coeffs = _cubic_coeffs(lam)
    for j in range(4):
        taps = np.clip(index - 1 + j, 0, in_size - 1)
        np.add.at(mat, (dst, taps), coeffs[:, j])
    return mat


def apply_resize(x: jax.Array, mat_h: jax.Array, mat_w: jax.Array) -> jax.Array:
    """Resizes NHWC ``x`` with row matrix ``mat_h`` and column matrix ``mat_w``.

    Matrices are ``(out, in)`` shared by the batch or ``(B, out, in)`` per sample.
    """
    hp = jax.lax.Precision.HIGHEST
    eq_h = "boh,bhwc->bowc" if mat_h.ndim == 3 else "oh,bhwc->bowc"
    eq_w = "bpw,bowc->bopc" if mat_w.ndim == 3 else "pw,bowc->bopc"
    y = jnp.einsum(eq_h, mat_h, x, precision=hp)
    return jnp.einsum(eq_w, mat_w, y, precision=hp)


def output_size(
    in_hw: tuple[int, int],
    size: int | tuple[int, int] | None,
    scale_factor: float | tuple[float, float] | None,
) -> tuple[tuple[int, int], tuple[float | None, float | None]]:
    """Output size and the per-axis factors PyTorch hands to its kernels."""
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        return (int(hw[0]), int(hw[1])), (None, None)
    sf = (
        (scale_factor, scale_factor)
        if isinstance(scale_factor, int | float)
        else tuple(scale_factor)
    )
    hw = tuple(int(math.floor(n * float(s))) for n, s in zip(in_hw, sf))
    return (hw[0], hw[1]), (float(sf[0]), float(sf[1]))


def resize(
    x: jax.Array,
    size: int | tuple[int, int] | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "bilinear",
) -> jax.Array:
    """``F.interpolate(x_nchw, size, scale_factor, mode, align_corners=False)`` for NHWC ``x``."""
    (oh, ow), (sh, sw) = output_size((x.shape[1], x.shape[2]), size, scale_factor)
    mat_h = jnp.asarray(resize_matrix(x.shape[1], oh, mode, sh))
    mat_w = jnp.asarray(resize_matrix(x.shape[2], ow, mode, sw))
    return apply_resize(x.astype(jnp.float32), mat_h, mat_w)


@functools.lru_cache(maxsize=64)
def _bicubic_matrix(in_size: int, out_size: int, scale_factor: float | None) -> np.ndarray:
    return resize_matrix(in_size, out_size, "bicubic", scale_factor)


def bicubic_resize(
    x: jax.Array,
    scale: int | float | None = None,
    size: tuple[int, int] | None = None,
) -> jax.Array:
    """Resize ``(..., H, W, C)`` ``x`` like ``F.interpolate(mode='bicubic', align_corners=False)``.

    Give either ``scale`` (output side = floor(side * scale)) or ``size`` = (height, width). The
    matrices are cast to ``x.dtype``; the result is not clamped, as in torch.
    """
    if (scale is None) == (size is None):
        raise ValueError("bicubic_resize needs exactly one of scale= or size=")
    h, w = x.shape[-3], x.shape[-2]
    if size is None:
        (out_h, out_w), (sh, sw) = output_size((h, w), None, float(scale))
    else:
        (out_h, out_w), (sh, sw) = (int(size[0]), int(size[1])), (None, None)
    my, mx = _bicubic_matrix(h, out_h, sh), _bicubic_matrix(w, out_w, sw)
    hp = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,...hwc->...owc", jnp.asarray(my, x.dtype), x, precision=hp)
    return jnp.einsum("pw,...owc->...opc", jnp.asarray(mx, x.dtype), y, precision=hp)


# ----------------------------------------------------------------------------- MATLAB


def _matlab_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
    far = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2))
    return (near + far).astype(x.dtype)


def imresize_matrix(
    in_size: int, out_size: int, scale: float, antialiasing: bool = True
) -> np.ndarray:
    """(out_size, in_size) float32 matrix of pyiqa's ``resize_1d`` (MATLAB bicubic ``imresize``).

    Weights are computed in float32, as pyiqa casts its inputs to float32 before resizing; a
    separable resize is then ``A_h @ img @ A_w.T``.
    """
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
    weight = _matlab_cubic(offsets * np.float32(aa))
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
