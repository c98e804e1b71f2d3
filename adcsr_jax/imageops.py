"""Pure array operations on NHWC images shared by the models and the inference path.

* ``bicubic_resize``: the same result as ``torch.nn.functional.interpolate(mode='bicubic',
  align_corners=False)`` (Keys cubic, A = -0.75, clamped border taps), written as two small
  interpolation matrices so it jits and differentiates like any einsum.
* Colour fixes: AdcSR's (per image and channel, unbiased std, no epsilon), OSEDiff's ``adain``
  (unbiased variance + 1e-5) and OSEDiff's ``wavelet`` (5-level a-trous low band swapped in).
* ``to_uint8``: the truncating conversion of torchvision's ``ToPILImage`` on float tensors.

Everything here is numpy + jax only, so the models can use it without pulling in I/O code.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_CUBIC_A = -0.75


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """The four Keys-cubic tap weights (taps at -1, 0, 1, 2) for fractional offsets ``t``."""
    a = np.float32(_CUBIC_A)
    one = np.float32(1.0)

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + one

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + one), near(t), near(one - t), far(np.float32(2.0) - t)], axis=-1)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int, scale_factor: float | None = None) -> np.ndarray:
    """(out_size, in_size) float32 matrix of torch's bicubic interpolation along one axis.

    ``scale_factor`` reproduces ``interpolate(scale_factor=s)`` (torch then maps coordinates with
    ``1/s``); without it the scale is ``in_size / out_size`` as for ``interpolate(size=...)``.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"bicubic_matrix needs positive sizes, got {in_size} -> {out_size}")
    scale = np.float32(1.0 / scale_factor) if scale_factor else np.float32(in_size / out_size)
    dst = np.arange(out_size, dtype=np.float32)
    real = scale * (dst + np.float32(0.5)) - np.float32(0.5)
    base = np.floor(real)
    t = (real - base).astype(np.float32)
    weights = _cubic_weights(t)  # (out, 4)
    taps = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    taps = np.clip(taps, 0, in_size - 1)
    matrix = np.zeros((out_size, in_size), np.float64)
    rows = np.repeat(np.arange(out_size), 4)
    np.add.at(matrix, (rows, taps.reshape(-1)), weights.reshape(-1).astype(np.float64))
    return matrix.astype(np.float32)


def bicubic_resize(
    x: jax.Array,
    scale: int | float | None = None,
    size: tuple[int, int] | None = None,
) -> jax.Array:
    """Resize NHWC ``x`` like ``F.interpolate(mode='bicubic', align_corners=False)`` on NCHW.

    Give either ``scale`` (output side = floor(side * scale)) or ``size`` = (height, width).
    The result is not clamped, as in torch.
    """
    if (scale is None) == (size is None):
        raise ValueError("bicubic_resize needs exactly one of scale= or size=")
    h, w = x.shape[-3], x.shape[-2]
    if size is None:
        out_h, out_w = int(np.floor(h * scale)), int(np.floor(w * scale))
        my = bicubic_matrix(h, out_h, float(scale))
        mx = bicubic_matrix(w, out_w, float(scale))
    else:
        out_h, out_w = size
        my, mx = bicubic_matrix(h, out_h), bicubic_matrix(w, out_w)
    hp = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,...hwc->...owc", jnp.asarray(my, x.dtype), x, precision=hp)
    return jnp.einsum("pw,...owc->...opc", jnp.asarray(mx, x.dtype), y, precision=hp)


def channel_stats(x: jax.Array, eps: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Per-image, per-channel mean and unbiased std (``sqrt(var + eps)``) of NHWC ``x``, in fp32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=(-3, -2), keepdims=True)
    n = x.shape[-3] * x.shape[-2]
    var = jnp.sum(jnp.square(x - mean), axis=(-3, -2), keepdims=True) / max(n - 1, 1)
    return mean, jnp.sqrt(var + eps)


def adain_colour_fix(target: jax.Array, source: jax.Array, eps: float = 0.0) -> jax.Array:
    """Give ``target`` the per-image, per-channel mean and std of ``source`` (sizes may differ).

    ``eps=0`` is AdcSR's fix (``torch.std``, applied in [-1, 1] against the LR input);
    ``eps=1e-5`` is OSEDiff's ``adain_color_fix`` (``var + 1e-5``, in [0, 1] against the x4
    bicubic input). A constant target channel gives inf/nan with ``eps=0``, as in AdcSR.
    """
    t_mean, t_std = channel_stats(target, eps)
    s_mean, s_std = channel_stats(source, eps)
    out = (target.astype(jnp.float32) - t_mean) / t_std * s_std + s_mean
    return out.astype(target.dtype)


def _wavelet_blur(x: jax.Array, radius: int) -> jax.Array:
    """3x3 [1,2,1]x[1,2,1]/16 blur with dilation ``radius`` and replicate padding, NHWC."""
    h, w = x.shape[-3], x.shape[-2]
    pad = [(0, 0)] * (x.ndim - 3) + [(radius, radius), (radius, radius), (0, 0)]
    xp = jnp.pad(x, pad, mode="edge")
    k = (0.25, 0.5, 0.25)
    out = jnp.zeros_like(x)
    for i in range(3):
        for j in range(3):
            tile = xp[..., i * radius : i * radius + h, j * radius : j * radius + w, :]
            out = out + (k[i] * k[j]) * tile
    return out


def wavelet_decomposition(x: jax.Array, levels: int = 5) -> tuple[jax.Array, jax.Array]:
    """(high, low) frequency bands of OSEDiff's a-trous decomposition (radii 1, 2, 4, ...)."""
    high = jnp.zeros_like(x)
    low = x
    for i in range(levels):
        blurred = _wavelet_blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_colour_fix(target: jax.Array, source: jax.Array, levels: int = 5) -> jax.Array:
    """OSEDiff's ``wavelet_color_fix``: target's high band + source's low band (same size)."""
    if target.shape != source.shape:
        raise ValueError(
            f"wavelet colour fix needs equal shapes, got target {target.shape} and source "
            f"{source.shape}; resize the source to the output size first"
        )
    high, _ = wavelet_decomposition(target, levels)
    _, low = wavelet_decomposition(source, levels)
    return high + low


def to_unit_range(x: jax.Array) -> jax.Array:
    """[-1, 1] -> [0, 1], clamped: AdcSR's ``(SR / 2 + 0.5).clamp(0, 1)``."""
    return jnp.clip(x / 2 + 0.5, 0.0, 1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 by truncation, as torchvision's ``ToPILImage`` (``mul(255).byte()``)."""
    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    return (x * np.float32(255.0)).astype(np.uint8)
