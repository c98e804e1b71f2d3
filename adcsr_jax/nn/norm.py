"""Torch-exact normalisation layers: statistics in fp32, biased variance, eps per layer."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

GROUP_CHOICES = (32, 24, 16, 8, 4, 2, 1)


def group_count(width: int) -> int:
    """GroupNorm groups for ``width`` channels: the first of (32, 24, 16, 8, 4, 2, 1) dividing it.

    This is AdcSR's rule for the pruned UNet (240 and 720 channels get 24 groups).
    """
    for groups in GROUP_CHOICES:
        if width % groups == 0:
            return groups
    raise AssertionError("unreachable: 1 divides every width")


def _affine(module: nn.Module, width: int) -> tuple[jax.Array, jax.Array]:
    init_ones = nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",))
    init_zeros = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",))
    scale = module.param("scale", init_ones, (width,), jnp.float32)
    bias = module.param("bias", init_zeros, (width,), jnp.float32)
    return scale, bias


class GroupNorm(nn.Module):
    """``torch.nn.GroupNorm`` over the last (channel) axis of ``(B, ..., C)`` inputs.

    Statistics are per sample and group over every non-batch axis (spatial or token) and the
    channels of the group, computed in fp32 with the two-pass (biased) variance as torch does.
    ``num_groups=None`` applies :func:`group_count` to the actual width.
    """

    num_groups: int | None = 32
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        groups = group_count(width) if self.num_groups is None else self.num_groups
        if width % groups:
            raise ValueError(
                f"{self.name or 'GroupNorm'}: {width} channels are not divisible into {groups} groups"
            )
        scale, bias = _affine(self, width)
        return group_norm(x, groups, scale, bias, self.epsilon).astype(self.dtype)


def group_norm(
    x: jax.Array, groups: int, scale: jax.Array, bias: jax.Array, epsilon: float
) -> jax.Array:
    """fp32 GroupNorm of ``(B, ..., C)``: torch's two-pass biased statistics, channels-last.

    Sums run over the flattened non-batch axes per channel first (a contiguous row reduction
    on NHWC data) and only then over the channels of each group, which on XLA:CPU is about 2x
    faster than reducing a ``(..., groups, C // groups)`` view directly; same math.
    """
    b, width = x.shape[0], x.shape[-1]
    per = width // groups
    xf = x.astype(jnp.float32).reshape(b, -1, width)
    count = xf.shape[1] * per

    def group_mean(per_channel_sum: jax.Array) -> jax.Array:  # (B, C) -> (B, 1, C)
        g = per_channel_sum.reshape(b, groups, per).sum(-1, keepdims=True) / count
        return jnp.broadcast_to(g, (b, groups, per)).reshape(b, 1, width)

    d = xf - group_mean(xf.sum(1))
    inv = jax.lax.rsqrt(group_mean(jnp.square(d).sum(1)) + epsilon)
    return (d * (inv * scale) + bias).reshape(x.shape)


class LayerNorm(nn.Module):
    """``torch.nn.LayerNorm`` over the last axis with affine params, stats in fp32."""

    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale, bias = _affine(self, x.shape[-1])
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(self.dtype)
