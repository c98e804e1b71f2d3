"""Luma conversions exactly as pyiqa computes them (``pyiqa.utils.color_util``).

Inputs are float32 NHWC RGB in [0, 1]; the arithmetic stays in float32 like pyiqa's, so the
rounding to 8-bit levels (SSIM, NIQE) lands on the same integers.
"""

from __future__ import annotations

import jax.numpy as jnp

# Y rows of pyiqa's rgb2ycbcr (BT.601, "MATLAB" YCbCr) and rgb2yiq matrices.
_YCBCR_Y = (65.481, 128.553, 24.966)
_YIQ_Y = (0.299, 0.587, 0.114)


def rgb_to_y(x: jnp.ndarray, color_space: str) -> jnp.ndarray:
    """Y channel, shape (N, H, W), in [0, 1] (ycbcr: (65.481R+128.553G+24.966B+16)/255)."""
    x = x.astype(jnp.float32)
    if color_space == "ycbcr":
        w = jnp.asarray(_YCBCR_Y, jnp.float32)
        return (jnp.einsum("nhwc,c->nhw", x, w) + jnp.float32(16.0)) / jnp.float32(255.0)
    if color_space == "yiq":
        return jnp.einsum("nhwc,c->nhw", x, jnp.asarray(_YIQ_Y, jnp.float32))
    raise ValueError(f"color_space must be 'ycbcr' or 'yiq', got {color_space!r}")


def rgb_to_y255_rounded(x: jnp.ndarray, color_space: str) -> jnp.ndarray:
    """Y scaled to [0, 255] and rounded to integers (pyiqa's ``to_y_channel(img, 255)``), float32."""
    return jnp.round(rgb_to_y(x, color_space) * jnp.float32(255.0))
