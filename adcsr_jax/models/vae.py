"""The Stable Diffusion VAE (diffusers ``AutoencoderKL`` semantics), NHWC, any width.

``Encoder`` and ``Decoder`` are setup-style so other modules can call their parts: the AdcSR
student calls ``decoder.mid_block`` and ``decoder.tail``; only the parts actually called get
params. Parameter paths mirror diffusers (``decoder/up_blocks_0/resnets_2/conv1/kernel``,
``encoder/mid_block/attentions_0/to_q/kernel``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcsr_jax.models.config_utils import (
    UnsupportedConfigError,
    check_supported,
    config_from_dict,
    config_to_dict,
    dtype_name,
)
from adcsr_jax.nn import Attention, Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D, conv

LOGVAR_RANGE = (-30.0, 20.0)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture of :class:`AutoencoderKL`; defaults are SD 2.1-base's VAE.

    ``decoder_block_out_channels`` (None = ``block_out_channels``) sets the decoder widths alone,
    e.g. ``(64, 128, 256, 256)`` for AdcSR's half-width decoder. All GroupNorms use
    ``norm_num_groups`` (None = ``group_count(width)``) and ``norm_eps``. ``remat`` wraps every
    down/up block and mid block in ``nn.remat`` (recomputed in the backward pass; same outputs and
    params tree).
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    decoder_block_out_channels: tuple[int, ...] | None = None
    layers_per_block: int = 2
    norm_num_groups: int | None = 32
    norm_eps: float = 1e-6
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    scaling_factor: float = 0.18215
    dtype: str = "float32"
    attention_query_chunk: int | None = None  # exact chunked mid-block attention (CPU speed)
    conv_matmul_max_pixels: int | None = None  # convs as matmuls (CPU speed, adcsr_jax.nn.conv)
    remat: bool = False  # nn.remat each encoder/decoder block and mid block (training memory)

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        fix("block_out_channels", tuple(int(c) for c in self.block_out_channels))
        if self.decoder_block_out_channels is not None:
            fix(
                "decoder_block_out_channels", tuple(int(c) for c in self.decoder_block_out_channels)
            )
        fix("dtype", dtype_name(self.dtype))

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        return self.decoder_block_out_channels or self.block_out_channels

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VAEConfig:
        return config_from_dict(cls, data)

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> VAEConfig:
        """Translate a diffusers ``AutoencoderKL`` ``config.json`` dict; reject what we lack."""
        check_supported(cfg, {"act_fn": ["silu"], "shift_factor": [None, 0, 0.0]}, "AutoencoderKL")
        widths = tuple(cfg.get("block_out_channels", (64,)))
        n = len(widths)
        down = list(cfg.get("down_block_types", ["DownEncoderBlock2D"] * n))
        up = list(cfg.get("up_block_types", ["UpDecoderBlock2D"] * n))
        problems = []
        if down != ["DownEncoderBlock2D"] * n:
            problems.append(f"down_block_types={down}")
        if up != ["UpDecoderBlock2D"] * n:
            problems.append(f"up_block_types={up}")
        if cfg.get("latents_mean") is not None or cfg.get("latents_std") is not None:
            problems.append("latents_mean/latents_std")
        if problems:
            raise UnsupportedConfigError("AutoencoderKL: unsupported " + "; ".join(problems))
        return cls(
            in_channels=cfg.get("in_channels", 3),
            out_channels=cfg.get("out_channels", 3),
            latent_channels=cfg.get("latent_channels", 4),
            block_out_channels=widths,
            layers_per_block=cfg.get("layers_per_block", 1),
            norm_num_groups=cfg.get("norm_num_groups", 32),
            mid_block_add_attention=cfg.get("mid_block_add_attention", True),
            use_quant_conv=cfg.get("use_quant_conv", True) is not False,
            use_post_quant_conv=cfg.get("use_post_quant_conv", True) is not False,
            scaling_factor=cfg.get("scaling_factor", 0.18215),
            dtype=dtype,
        )


class VAEMidBlock(nn.Module):
    """``UNetMidBlock2D`` without time embedding: resnets_0 -> [attentions_0] -> resnets_1.

    The attention has one head over all channels, q/k/v bias, its own GroupNorm and a residual.
    """

    width: int
    num_groups: int | None = 32
    eps: float = 1e-6
    add_attention: bool = True
    dtype: Any = jnp.float32
    query_chunk: int | None = None

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        def res(name: str) -> ResnetBlock2D:
            return ResnetBlock2D(self.width, self.num_groups, self.eps, self.dtype, name=name)

        h = res("resnets_0")(h)
        if self.add_attention:
            h = Attention(
                heads=1,
                qkv_bias=True,
                group_norm=True,
                norm_num_groups=self.num_groups,
                norm_eps=self.eps,
                residual=True,
                query_chunk=self.query_chunk,
                dtype=self.dtype,
                name="attentions_0",
            )(h)
        return res("resnets_1")(h)


class VAEBlock(nn.Module):
    """diffusers ``DownEncoderBlock2D`` / ``UpDecoderBlock2D``: ResNets, then the resampler.

    ``resample``: ``"down"`` = the right/bottom-padded stride-2 conv (``downsamplers_0``),
    ``"up"`` = nearest x2 + conv (``upsamplers_0``), ``None`` = none (the last block).
    """

    width: int
    num_layers: int
    resample: Literal["down", "up"] | None
    num_groups: int | None = 32
    eps: float = 1e-6
    dtype: Any = jnp.float32
    conv_matmul_max_pixels: int | None = None

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        mm = self.conv_matmul_max_pixels
        for i in range(self.num_layers):
            h = ResnetBlock2D(
                self.width, self.num_groups, self.eps, self.dtype, mm, name=f"resnets_{i}"
            )(h)
        if self.resample == "down":
            h = Downsample2D(self.width, "vae", self.dtype, mm, name="downsamplers_0")(h)
        elif self.resample == "up":
            h = Upsample2D(self.width, self.dtype, mm, name="upsamplers_0")(h)
        return h


def _block_classes(config: VAEConfig) -> tuple[type, type]:
    """``(VAEBlock, VAEMidBlock)``, each wrapped in ``nn.remat`` when ``config.remat``."""
    if config.remat:
        return nn.remat(VAEBlock), nn.remat(VAEMidBlock)
    return VAEBlock, VAEMidBlock


class Encoder(nn.Module):
    """Image ``(B, H, W, in)`` -> moments ``(B, H/8, W/8, 2 * latent)`` (before quant_conv)."""

    config: VAEConfig

    def setup(self) -> None:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        widths = cfg.block_out_channels
        block_cls, mid_cls = _block_classes(cfg)
        self.conv_in = conv(widths[0], 3, dtype=dtype)
        self.down_blocks = [
            block_cls(
                w,
                cfg.layers_per_block,
                "down" if i < len(widths) - 1 else None,
                cfg.norm_num_groups,
                cfg.norm_eps,
                dtype,
                cfg.conv_matmul_max_pixels,
            )
            for i, w in enumerate(widths)
        ]
        self.mid_block = mid_cls(
            widths[-1],
            cfg.norm_num_groups,
            cfg.norm_eps,
            cfg.mid_block_add_attention,
            dtype,
            cfg.attention_query_chunk,
        )
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, cfg.norm_eps, dtype=dtype)
        self.conv_out = conv(2 * cfg.latent_channels, 3, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x.astype(jnp.dtype(self.config.dtype)))
        for block in self.down_blocks:
            h = block(h)
        h = self.mid_block(h)
        return self.conv_out(nn.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """Latent ``(B, h, w, latent)`` -> image ``(B, 8h, 8w, out)`` (widths: ``decoder_widths``).

    ``stem(z)`` = conv_in -> mid_block; ``tail(h)`` = up blocks -> GN -> SiLU -> conv_out.
    """

    config: VAEConfig

    def setup(self) -> None:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        widths = tuple(reversed(cfg.decoder_widths))
        block_cls, mid_cls = _block_classes(cfg)
        self.conv_in = conv(widths[0], 3, dtype=dtype)
        self.mid_block = mid_cls(
            widths[0],
            cfg.norm_num_groups,
            cfg.norm_eps,
            cfg.mid_block_add_attention,
            dtype,
            cfg.attention_query_chunk,
        )
        self.up_blocks = [
            block_cls(
                w,
                cfg.layers_per_block + 1,
                "up" if i < len(widths) - 1 else None,
                cfg.norm_num_groups,
                cfg.norm_eps,
                dtype,
                cfg.conv_matmul_max_pixels,
            )
            for i, w in enumerate(widths)
        ]
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, cfg.norm_eps, dtype=dtype)
        self.conv_out = conv(cfg.out_channels, 3, dtype=dtype)

    def stem(self, z: jax.Array) -> jax.Array:
        """conv_in -> mid_block."""
        return self.mid_block(self.conv_in(z.astype(jnp.dtype(self.config.dtype))))

    def tail(self, h: jax.Array) -> jax.Array:
        """up blocks -> conv_norm_out -> SiLU -> conv_out."""
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(nn.silu(self.conv_norm_out(h)))

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.tail(self.stem(z))


def sample_latent(mean: jax.Array, logvar: jax.Array, rng: jax.Array) -> jax.Array:
    """Draw from the diagonal Gaussian posterior: ``mean + exp(logvar / 2) * N(0, 1)``."""
    noise = jax.random.normal(rng, mean.shape, jnp.float32).astype(mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * noise


class AutoencoderKL(nn.Module):
    """encoder -> quant_conv -> (mean, logvar); post_quant_conv -> decoder.

    Latents are unscaled here; multiply by ``config.scaling_factor`` (0.18215) for the UNet.
    """

    config: VAEConfig

    def setup(self) -> None:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.use_quant_conv:
            self.quant_conv = conv(2 * cfg.latent_channels, 1, dtype=dtype)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = conv(cfg.latent_channels, 1, dtype=dtype)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Image in [-1, 1], NHWC -> ``(mean, logvar)``, logvar clamped to [-30, 20]."""
        moments = self.encoder(x)
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def post_quant(self, z: jax.Array) -> jax.Array:
        """post_quant_conv (identity when the config has none)."""
        if self.config.use_post_quant_conv:
            return self.post_quant_conv(z.astype(jnp.dtype(self.config.dtype)))
        return z

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latent -> image (post_quant_conv -> decoder)."""
        return self.decoder(self.post_quant(z))

    def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Reconstruct: decode the posterior mean, or a sample when ``rng`` is given."""
        mean, logvar = self.encode(x)
        z = mean if rng is None else sample_latent(mean, logvar, rng)
        return self.decode(z)
