"""Sinusoidal timestep embedding and the two-layer ``TimestepEmbedding`` MLP (diffusers)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.nn.axes import dense


def timestep_embedding(
    timesteps: jax.Array,
    dim: int,
    *,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> jax.Array:
    """diffusers ``get_timestep_embedding`` in fp32: ``(N,)`` -> ``(N, dim)``, cos first if flipped."""
    half = dim // 2
    # Frequencies are constants: computed on the host in fp32, in torch's order of operations.
    exponent = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)
    freqs = np.exp(exponent / np.float32(half - freq_shift))
    args = jnp.asarray(timesteps, jnp.float32)[:, None] * jnp.asarray(freqs)[None, :]
    parts = (jnp.cos(args), jnp.sin(args)) if flip_sin_to_cos else (jnp.sin(args), jnp.cos(args))
    emb = jnp.concatenate(parts, axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """``linear_1`` -> SiLU -> ``linear_2``."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = dense(self.features, ("embed", "time"), dtype=self.dtype, name="linear_1")(x)
        return dense(self.features, ("time", "time"), dtype=self.dtype, name="linear_2")(nn.silu(h))
