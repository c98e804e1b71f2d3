"""TAESD's tiny VAE decoder (madebyollin/taesd ``taesd.py: Decoder``; diffusers ``DecoderTiny``).

Convolutions and ReLUs only, no normalisation or attention:

    z (B,h,w,4) -> tanh(z / 3) * 3 -> conv 3x3 (4 -> C) -> ReLU
    -> for each stage: ``num_blocks[i]`` x Block(C) -> [nearest x2 -> conv 3x3 without bias]
    -> final conv 3x3 (C -> 3, with bias) -> x * 2 - 1   (image in about [-1, 1])

``Block`` = ``ReLU(conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv3x3 + x)`` (widths equal, so the
skip is the identity). TAESD's published decoder is ``C = 64``, ``num_blocks = (3, 3, 3, 1)``
(1,222,531 parameters), reading **scaled** SD latents (``z * 0.18215``, the UNet's space) and
upsampling x8. The original returns images in [0, 1]; diffusers' ``DecoderTiny`` (``AutoencoderTiny``)
appends ``x * 2 - 1``, and so does this port (the student's images live in [-1, 1]).

Param paths mirror diffusers' ``decoder.layers.<i>`` indices (the ``nn.Sequential`` index,
counting the parameter-free ReLU and Upsample entries): ``layers_0/kernel`` (conv_in),
``layers_2/conv_0/kernel`` (first Block), ``layers_6/kernel`` (the first bias-free upsample conv),
``layers_18/{kernel,bias}`` (the output conv). TAESD's own ``taesd_decoder.pth`` counts the Clamp
too, so its indices are one higher (``weights/taesd.py`` maps them).

:meth:`TAESDDecoder.body` (everything up to the last conv's input) and :meth:`TAESDDecoder.head`
(last conv and ``* 2 - 1``) split the network for stage 1's adaptive GAN weight, which needs the
gradient at the last layer's kernel (``last_layer`` names it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcsr_jax.models import abstract_params_of
from adcsr_jax.models.config_utils import config_from_dict, config_to_dict, dtype_name
from adcsr_jax.nn.axes import CONV_KERNEL
from adcsr_jax.nn.conv import conv_general_dilated_for

CLAMP = 3.0  # TAESD ``Clamp``: tanh(x / 3) * 3


@dataclasses.dataclass(frozen=True)
class TAESDConfig:
    """Architecture of :class:`TAESDDecoder`; the defaults are TAESD's published SD decoder."""

    latent_channels: int = 4
    out_channels: int = 3
    channels: int = 64
    num_blocks: tuple[int, ...] = (3, 3, 3, 1)
    dtype: str = "float32"
    conv_matmul_max_pixels: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_blocks", tuple(int(n) for n in self.num_blocks))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if not self.num_blocks:
            raise ValueError("TAESDConfig.num_blocks must name at least one stage")

    @property
    def upscale(self) -> int:
        return 2 ** (len(self.num_blocks) - 1)

    def layout(self) -> list[tuple[str, int]]:
        """``(kind, diffusers index)`` of each entry of diffusers' ``DecoderTiny.layers``."""
        entries = [("conv_in", 0), ("relu", 1)]
        i = 2
        for s, n in enumerate(self.num_blocks):
            for _ in range(n):
                entries.append(("block", i))
                i += 1
            if s < len(self.num_blocks) - 1:
                entries += [("upsample", i), ("conv_up", i + 1)]
                i += 2
            else:
                entries.append(("conv_out", i))
        return entries

    @property
    def last_layer(self) -> str:
        """Param name of the output conv (``layers_18`` at the published size)."""
        return f"layers_{self.layout()[-1][1]}"

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TAESDConfig:
        return config_from_dict(cls, data)


def _conv(cfg: TAESDConfig, features: int, kernel: int, bias: bool, name: str) -> nn.Conv:
    p = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        padding=((p, p), (p, p)),
        use_bias=bias,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), CONV_KERNEL),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
        conv_general_dilated=conv_general_dilated_for(cfg.conv_matmul_max_pixels),
        name=name,
    )


class TAESDBlock(nn.Module):
    """TAESD ``Block(C, C)`` / diffusers ``AutoencoderTinyBlock``: convs ``conv_0/2/4``."""

    config: TAESDConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config.channels
        h = nn.relu(_conv(self.config, c, 3, True, "conv_0")(x))
        h = nn.relu(_conv(self.config, c, 3, True, "conv_2")(h))
        h = _conv(self.config, c, 3, True, "conv_4")(h)
        return nn.relu(h + x)


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    """torch ``nn.Upsample(scale_factor=2)`` (nearest) on NHWC."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class TAESDDecoder(nn.Module):
    """Scaled latent ``(B,h,w,latent)`` -> image ``(B, 8h, 8w, 3)`` in about [-1, 1]."""

    config: TAESDConfig

    @nn.compact
    def body(self, z: jax.Array) -> jax.Array:
        """Clamp through the last Block: ``(B,h,w,latent) -> (B,8h,8w,C)``."""
        cfg = self.config
        if z.ndim != 4 or z.shape[-1] != cfg.latent_channels:
            raise ValueError(
                f"TAESD decoder expects NHWC latents with {cfg.latent_channels} channels, got "
                f"{z.shape}"
            )
        h = jnp.tanh(z.astype(jnp.dtype(cfg.dtype)) / CLAMP) * CLAMP
        for kind, i in cfg.layout()[:-1]:
            name = f"layers_{i}"
            if kind == "conv_in":
                h = _conv(cfg, cfg.channels, 3, True, name)(h)
            elif kind == "relu":
                h = nn.relu(h)
            elif kind == "block":
                h = TAESDBlock(cfg, name=name)(h)
            elif kind == "upsample":
                h = upsample_nearest(h)
            else:  # conv_up
                h = _conv(cfg, cfg.channels, 3, False, name)(h)
        return h

    @nn.compact
    def head(self, h: jax.Array) -> jax.Array:
        """The output conv, then ``* 2 - 1`` (diffusers' [0, 1] -> [-1, 1])."""
        cfg = self.config
        return _conv(cfg, cfg.out_channels, 3, True, cfg.last_layer)(h) * 2.0 - 1.0

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.head(self.body(z))


def abstract_taesd_params(config: TAESDConfig) -> Any:
    """Shape-only params tree of the decoder (``jax.eval_shape``; nothing allocated)."""
    z = jax.ShapeDtypeStruct((1, 2, 2, config.latent_channels), jnp.float32)
    return abstract_params_of(TAESDDecoder(config), z)
