"""diffusers ``Transformer2DModel`` (linear projections) and ``BasicTransformerBlock`` with GEGLU."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcsr_jax.nn.attention import Attention
from adcsr_jax.nn.axes import dense
from adcsr_jax.nn.norm import GroupNorm, LayerNorm


class GEGLU(nn.Module):
    """``proj`` to 2x ``inner`` features, split into (h, gate), return h * gelu_erf(gate)."""

    inner: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = dense(2 * self.inner, ("embed", "mlp"), dtype=self.dtype, name="proj")(x)
        h, gate = jnp.split(h, 2, axis=-1)
        return h * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """diffusers ``FeedForward`` with GEGLU: ``net_0`` (GEGLU, 4x width) then ``net_2`` (Dense)."""

    mult: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        h = GEGLU(self.mult * width, dtype=self.dtype, name="net_0")(x)
        return dense(width, ("mlp", "embed"), dtype=self.dtype, name="net_2")(h)


class BasicTransformerBlock(nn.Module):
    """LN1 -> self-attn ``attn1``; [LN2 -> cross-attn ``attn2``]; LN3 -> ``ff``; each residual.

    ``cross_attention=False`` builds neither ``norm2`` nor ``attn2`` (the pruned AdcSR UNet).
    """

    heads: int
    cross_attention: bool = True
    layer_norm_eps: float = 1e-5
    query_chunk: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        ln = lambda name: LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)  # noqa: E731
        attn1 = Attention(self.heads, query_chunk=self.query_chunk, dtype=self.dtype, name="attn1")
        x = x + attn1(ln("norm1")(x))
        if self.cross_attention:
            if context is None:
                raise ValueError("this transformer block has cross-attention: pass a context")
            attn2 = Attention(
                self.heads, query_chunk=self.query_chunk, dtype=self.dtype, name="attn2"
            )
            x = x + attn2(ln("norm2")(x), context)
        return x + FeedForward(dtype=self.dtype, name="ff")(ln("norm3")(x))


class Transformer2D(nn.Module):
    """GN(eps 1e-6) -> tokens -> ``proj_in`` -> blocks -> ``proj_out`` -> map, plus the input."""

    heads: int
    num_layers: int = 1
    cross_attention: bool = True
    norm_num_groups: int | None = 32
    norm_eps: float = 1e-6
    layer_norm_eps: float = 1e-5
    query_chunk: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        b, h, w, width = x.shape
        y = GroupNorm(self.norm_num_groups, self.norm_eps, dtype=self.dtype, name="norm")(x)
        y = y.reshape(b, h * w, width)
        y = dense(width, ("embed", "embed"), dtype=self.dtype, name="proj_in")(y)
        for i in range(self.num_layers):
            y = BasicTransformerBlock(
                self.heads,
                self.cross_attention,
                self.layer_norm_eps,
                self.query_chunk,
                dtype=self.dtype,
                name=f"transformer_blocks_{i}",
            )(y, context)
        y = dense(width, ("embed", "embed"), dtype=self.dtype, name="proj_out")(y)
        return y.reshape(b, h, w, width) + x.astype(y.dtype)
