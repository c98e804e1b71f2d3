"""Down/upsampling and pixel (un)shuffle, NHWC.

The UNet downsampler pads 1 on every side; the VAE encoder's pads right/bottom only (then conv
with padding 0). Upsampling is torch ``nearest`` (x2, or to an explicit size as diffusers does for
latents that are not multiples of the total down factor).
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.nn.axes import conv


class Downsample2D(nn.Module):
    """3x3 conv with stride 2 (param ``conv``); ``padding='unet'`` (1,1) or ``'vae'`` (0,1)."""

    out_channels: int
    padding: Literal["unet", "vae"] = "unet"
    dtype: Any = jnp.float32
    conv_matmul_max_pixels: int | None = None  # see adcsr_jax.nn.conv

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = {"unet": ((1, 1), (1, 1)), "vae": ((0, 1), (0, 1))}[self.padding]
        return conv(
            self.out_channels,
            3,
            stride=2,
            padding=pad,
            dtype=self.dtype,
            name="conv",
            matmul_max_pixels=self.conv_matmul_max_pixels,
        )(x)


def upsample_nearest(x: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
    """torch ``F.interpolate(mode='nearest')`` on NHWC: x2 by default, or to ``size``."""
    b, h, w, c = x.shape
    if size is None or tuple(size) == (2 * h, 2 * w):
        y = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
        return y.reshape(b, 2 * h, 2 * w, c)
    out_h, out_w = size
    # torch: src = floor(dst * in / out); exact in integers for the sizes that occur here.
    rows = (np.arange(out_h) * h) // out_h
    cols = (np.arange(out_w) * w) // out_w
    return jnp.take(jnp.take(x, rows, axis=1), cols, axis=2)


class Upsample2D(nn.Module):
    """Nearest upsampling then a 3x3 conv (param ``conv``)."""

    out_channels: int
    dtype: Any = jnp.float32
    conv_matmul_max_pixels: int | None = None  # see adcsr_jax.nn.conv

    @nn.compact
    def __call__(self, x: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
        mm = self.conv_matmul_max_pixels
        return conv(self.out_channels, 3, dtype=self.dtype, name="conv", matmul_max_pixels=mm)(
            upsample_nearest(x, size)
        )


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
    """``torch.nn.PixelUnshuffle`` on NHWC: output channel = c * r * r + i * r + j."""
    b, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"pixel_unshuffle: {h}x{w} is not divisible by {factor}")
    y = x.reshape(b, h // factor, factor, w // factor, factor, c)
    y = y.transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(b, h // factor, w // factor, c * factor * factor)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """``torch.nn.PixelShuffle`` on NHWC (inverse of :func:`pixel_unshuffle`)."""
    b, h, w, cr = x.shape
    if cr % (factor * factor):
        raise ValueError(f"pixel_shuffle: {cr} channels are not divisible by {factor}^2")
    c = cr // (factor * factor)
    y = x.reshape(b, h, w, c, factor, factor).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(b, h * factor, w * factor, c)


class PixelUnshuffle(nn.Module):
    """Module form of :func:`pixel_unshuffle` (no params)."""

    factor: int = 2

    def __call__(self, x: jax.Array) -> jax.Array:
        return pixel_unshuffle(x, self.factor)
