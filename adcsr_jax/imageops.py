"""Pure array operations on NHWC images shared by the models and the inference path.

* Colour fixes: AdcSR's (per image and channel, unbiased std, no epsilon), OSEDiff's ``adain``
  (unbiased variance + 1e-5) and OSEDiff's ``wavelet`` (5-level a-trous low band swapped in).
* ``to_uint8``: the truncating conversion of torchvision's ``ToPILImage`` on float tensors.

Everything here is numpy + jax only, so the models can use it without pulling in I/O code.
Resizing lives in ``adcsr_jax.resize``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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
