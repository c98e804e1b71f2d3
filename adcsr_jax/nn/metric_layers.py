"""Small Flax layers shared by the learned IQA ports (torch-exact norms, NHWC pooling)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


class GroupNorm(nn.Module):
    """torch ``nn.GroupNorm`` on NHWC (two-pass variance in fp32)."""

    num_groups: int
    epsilon: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        shape = x.shape
        g = x.reshape(shape[0], -1, self.num_groups, c // self.num_groups).astype(jnp.float32)
        mean = g.mean(axis=(1, 3), keepdims=True)
        var = jnp.square(g - mean).mean(axis=(1, 3), keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (g.reshape(shape) * scale + bias).astype(x.dtype)


class BatchNorm(nn.Module):
    """torch ``nn.BatchNorm2d`` in eval mode (running statistics kept as params)."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("running_mean", nn.initializers.zeros, (c,))
        var = self.param("running_var", nn.initializers.ones, (c,))
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias


def layer_norm(epsilon: float, name: str) -> nn.LayerNorm:
    """torch ``nn.LayerNorm`` equivalent (two-pass variance)."""
    return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, name=name)


def avg_pool(x: jax.Array, k: int) -> jax.Array:
    """torch ``nn.AvgPool2d(k)`` on NHWC (stride k, no padding, floor mode)."""
    if k == 1:
        return x
    n, h, w, c = x.shape
    h2, w2 = h // k, w // k
    x = x[:, : h2 * k, : w2 * k].reshape(n, h2, k, w2, k, c)
    return x.mean(axis=(2, 4))


def dense(features: int, name: str, use_bias: bool = True) -> nn.Dense:
    """``nn.Dense`` at full fp32 matmul precision (parity with torch on CPU/GPU)."""
    return nn.Dense(features, use_bias=use_bias, precision=HIGHEST, name=name)


def conv(
    features: int,
    kernel: int,
    name: str,
    stride: int = 1,
    padding: int | tuple[tuple[int, int], tuple[int, int]] = 0,
    use_bias: bool = True,
) -> nn.Conv:
    """torch-style ``nn.Conv2d`` on NHWC with explicit padding."""
    pad = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=pad,
        use_bias=use_bias,
        precision=HIGHEST,
        name=name,
    )


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (timm/pyiqa ``Mlp``, used by MUSIQ and MANIQA)."""

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.gelu(dense(self.hidden, "fc1")(x), approximate=False)
        return dense(self.out, "fc2")(x)
