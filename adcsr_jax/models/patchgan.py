"""PatchGAN discriminator of pix2pix as taming-transformers builds it (``NLayerDiscriminator``).

taming ``taming/modules/discriminator/model.py`` (used by latent-diffusion's
``LPIPSWithDiscriminator``, the loss SD's VAE was trained with): conv 4x4 s2 (bias) -> LeakyReLU
0.2, then ``n_layers - 1`` blocks conv 4x4 s2 (no bias) -> BatchNorm -> LeakyReLU with widths
``ndf * min(2^n, 8)``, one conv 4x4 s1 (no bias) -> BatchNorm -> LeakyReLU, and a 4x4 s1 conv
to one logit per patch; every conv pads 1. Param names follow the torch ``nn.Sequential``
indices (``main_0``, ``main_2``, ``main_3``, ...), so ``main.3.weight`` is ``main_3/scale``.

BatchNorm is torch's ``BatchNorm2d`` (momentum 0.1, eps 1e-5): in training mode it normalises
with the biased batch variance and updates the running mean and the *unbiased* running variance
in the ``batch_stats`` collection; in eval mode it uses the running statistics. Under ``jax.jit``
over a batch sharded on several devices the batch statistics are those of the global batch
(XLA inserts the all-reduce), unlike taming under DDP, where each GPU normalises by its own
per-GPU batch (no SyncBatchNorm). One device and N devices therefore give identical results here.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

KERNEL = 4
BN_MOMENTUM = 0.1
BN_EPS = 1e-5


def _torch_conv_bias_init(fan_in: int):
    """torch ``Conv2d``'s default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / fan_in**0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class BatchNorm2d(nn.Module):
    """torch ``BatchNorm2d`` semantics on NHWC (statistics over N, H, W in float32)."""

    features: int
    momentum: float = BN_MOMENTUM
    eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = self.features
        scale = self.param("scale", lambda k, s: 1.0 + 0.02 * jax.random.normal(k, s), (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        xf = x.astype(jnp.float32)
        if train:
            mean = jnp.mean(xf, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
            if not self.is_initializing():
                n = xf.size // c
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(x.dtype)


class NLayerDiscriminator(nn.Module):
    """Image (B, H, W, in) in [-1, 1] -> patch logits (B, H', W', 1); see the module docstring.

    ``__call__(x, train)``: with ``train=True`` apply it with ``mutable=["batch_stats"]``.
    Init follows taming's ``weights_init``: conv weights N(0, 0.02), BatchNorm weight N(1, 0.02)
    and bias 0; conv biases keep torch's default.
    """

    input_nc: int = 3
    ndf: int = 64
    n_layers: int = 3
    dtype: Any = jnp.float32

    def _conv(self, width: int, stride: int, bias: bool, fan_in: int, name: str) -> nn.Conv:
        return nn.Conv(
            width,
            (KERNEL, KERNEL),
            strides=(stride, stride),
            padding=((1, 1), (1, 1)),
            use_bias=bias,
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(0.02),
            bias_init=_torch_conv_bias_init(fan_in * KERNEL * KERNEL),
            name=name,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        def act(h: jax.Array) -> jax.Array:
            return nn.leaky_relu(h, 0.2)

        h = act(self._conv(self.ndf, 2, True, self.input_nc, "main_0")(x.astype(self.dtype)))
        index, width = 2, self.ndf
        for n in range(1, self.n_layers + 1):
            stride = 2 if n < self.n_layers else 1
            new = self.ndf * min(2**n, 8)
            h = self._conv(new, stride, False, width, f"main_{index}")(h)
            h = act(BatchNorm2d(new, name=f"main_{index + 1}")(h, train))
            index, width = index + 3, new
        logits = self._conv(1, 1, True, width, f"main_{index}")(h)
        return logits.astype(jnp.float32)
