"""Multi-head attention with diffusers ``Attention`` semantics and parameter names.

Inner width = query width, head_dim = width / heads, scale 1/sqrt(head_dim) (torch SDPA's default,
so 48 in the pruned UNet), softmax in fp32 via ``jax.nn.dot_product_attention``. The same module
serves UNet self-/cross-attention (``attn1``/``attn2``: no q/k/v bias) and the VAE mid-block
attention (q/k/v bias, own GroupNorm ``group_norm``, residual connection, NHWC input).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcsr_jax.nn.axes import dense
from adcsr_jax.nn.norm import GroupNorm


def multi_head_attention(q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
    """Scaled dot-product attention over ``(B, T, C)`` tokens split into ``heads`` heads."""
    b, t, width = q.shape
    if width % heads:
        raise ValueError(f"attention width {width} is not divisible by {heads} heads")
    head_dim = width // heads
    split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, head_dim)  # noqa: E731
    out = jax.nn.dot_product_attention(
        split(q), split(k), split(v), scale=1.0 / math.sqrt(head_dim)
    )
    return out.reshape(b, t, width)


class Attention(nn.Module):
    """diffusers ``Attention`` (params ``to_q``, ``to_k``, ``to_v``, ``to_out_0``, ``group_norm``).

    Accepts ``(B, T, C)`` tokens or ``(B, H, W, C)`` maps (flattened to tokens and back).
    ``context`` (``(B, S, D)``) makes it cross-attention; without it, it attends to itself.
    """

    heads: int
    qkv_bias: bool = False
    group_norm: bool = False
    norm_num_groups: int | None = 32
    norm_eps: float = 1e-6
    residual: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        shape = x.shape
        width = shape[-1]
        tokens = x.reshape(shape[0], -1, width) if x.ndim == 4 else x
        if self.group_norm:
            tokens = GroupNorm(
                self.norm_num_groups, self.norm_eps, dtype=self.dtype, name="group_norm"
            )(tokens)
        source = tokens if context is None else context.astype(self.dtype)
        kv_axes = ("embed", "heads") if context is None else ("context", "heads")
        q = dense(width, ("embed", "heads"), use_bias=self.qkv_bias, dtype=self.dtype, name="to_q")(
            tokens
        )
        k = dense(width, kv_axes, use_bias=self.qkv_bias, dtype=self.dtype, name="to_k")(source)
        v = dense(width, kv_axes, use_bias=self.qkv_bias, dtype=self.dtype, name="to_v")(source)
        out = multi_head_attention(q, k, v, self.heads)
        out = dense(width, ("heads", "embed"), dtype=self.dtype, name="to_out_0")(out)
        out = out.reshape(shape)
        if self.residual:
            out = out + x.astype(out.dtype)
        return out
