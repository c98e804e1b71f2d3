"""diffusers ``ResnetBlock2D`` (``time_embedding_norm='default'``, output scale 1)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcsr_jax.nn.axes import conv, dense
from adcsr_jax.nn.norm import GroupNorm


class ResnetBlock2D(nn.Module):
    """GN -> SiLU -> conv1 [+ time_emb_proj(SiLU(temb))] -> GN -> SiLU -> conv2, plus shortcut.

    ``time_emb_proj`` exists only when the block is called with ``temb``; ``conv_shortcut`` (1x1)
    only when input and output widths differ. ``num_groups=None``: :func:`group_count` per norm.
    ``conv_matmul_max_pixels``: maps up to this size convolve as one matmul (CPU speed).
    """

    out_channels: int
    num_groups: int | None = 32
    eps: float = 1e-5
    dtype: Any = jnp.float32
    conv_matmul_max_pixels: int | None = None  # see adcsr_jax.nn.conv

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        mm = self.conv_matmul_max_pixels
        gn = lambda name: GroupNorm(self.num_groups, self.eps, dtype=self.dtype, name=name)  # noqa: E731
        h = conv(self.out_channels, 3, dtype=self.dtype, name="conv1", matmul_max_pixels=mm)(
            nn.silu(gn("norm1")(x))
        )
        if temb is not None:
            t = dense(
                self.out_channels, ("time", "conv_out"), dtype=self.dtype, name="time_emb_proj"
            )(nn.silu(temb.astype(self.dtype)))
            h = h + t[:, None, None, :]
        h = conv(self.out_channels, 3, dtype=self.dtype, name="conv2", matmul_max_pixels=mm)(
            nn.silu(gn("norm2")(h))
        )
        if x.shape[-1] != self.out_channels:
            x = conv(
                self.out_channels, 1, dtype=self.dtype, name="conv_shortcut", matmul_max_pixels=mm
            )(x)
        return x.astype(h.dtype) + h
