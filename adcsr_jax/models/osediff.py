"""The OSEDiff teacher: one denoising step of SD 2.1-base (LoRA merged) from a bicubic-upscaled LR.

Dataflow (NHWC, images in [-1, 1]; cswry/OSEDiff ``osediff.py: OSEDiff_test``):

    LR (B,H,W,3) -> torch-exact bicubic x4 -> VAE encoder -> mean (or a sample with a key)
    x 0.18215 = z -> UNet(z, t=999, text (B,77,1024)) = eps
    -> z0 = (z - sqrt(1 - abar) eps) / sqrt(abar) -> VAE decoder(z0 / 0.18215) -> clamp [-1, 1].

The stage-2 teacher feature ``f_T`` (AdcSR ``train.py``) replaces the SD decoder by the half
decoder's stem: ``half.mid_block(half.conv_in(post_quant_conv(z0 / 0.18215)))``.

Params: ``{'vae': {encoder, quant_conv, post_quant_conv, decoder}, 'unet': ...,
'half_decoder': {conv_in, mid_block}}`` (``half_decoder`` only with ``config.half_decoder``).
Text embeddings are an input here; building them from prompts belongs to the text encoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.models import abstract_params_of
from adcsr_jax.models.config_utils import dtype_name
from adcsr_jax.models.unet import UNet2D, UNetConfig
from adcsr_jax.models.vae import AutoencoderKL, Decoder, VAEConfig, sample_latent
from adcsr_jax.resize import bicubic_resize

HALF_DECODER = VAEConfig(block_out_channels=(64, 128, 256, 256))


def alphas_cumprod(
    beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000
) -> np.ndarray:
    """SD's ``scaled_linear`` schedule: cumprod(1 - linspace(sqrt(b0), sqrt(b1), T)^2), fp32."""
    betas = np.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=np.float32) ** 2
    return np.cumprod(1.0 - betas.astype(np.float64)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class OSEDiffConfig:
    """The teacher: SD UNet + VAE configs, optional half decoder (for ``f_T``), schedule, step."""

    unet: UNetConfig = UNetConfig()
    vae: VAEConfig = VAEConfig()
    half_decoder: VAEConfig | None = None
    timestep: int = 999
    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    upscale: int = 4

    @classmethod
    def full(cls, dtype: Any = "float32", half_decoder: bool = True) -> OSEDiffConfig:
        """SD 2.1-base UNet and VAE (+ AdcSR's half decoder for ``f_T``)."""
        return cls(half_decoder=HALF_DECODER if half_decoder else None).with_dtype(dtype)

    @classmethod
    def tiny(cls, dtype: Any = "float32", half_decoder: bool = True) -> OSEDiffConfig:
        """Same structure at small widths, for tests (text width 32)."""
        return cls(
            unet=UNetConfig(
                block_out_channels=(32, 64, 128, 128),
                num_attention_heads=(2, 2, 4, 4),
                cross_attention_dim=32,
            ),
            vae=VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1),
            half_decoder=VAEConfig(block_out_channels=(32, 32, 64, 64)) if half_decoder else None,
        ).with_dtype(dtype)

    def with_dtype(self, dtype: Any) -> OSEDiffConfig:
        name = dtype_name(dtype)
        half = (
            None
            if self.half_decoder is None
            else dataclasses.replace(self.half_decoder, dtype=name)
        )
        return dataclasses.replace(
            self,
            unet=dataclasses.replace(self.unet, dtype=name),
            vae=dataclasses.replace(self.vae, dtype=name),
            half_decoder=half,
        )

    def with_fast_paths(
        self, attention_query_chunk: int | None, conv_matmul_max_pixels: int | None
    ) -> OSEDiffConfig:
        """The same teacher with the exact CPU fast paths set (chunked attention in the UNet and
        VAE attention; im2col-matmul UNet convs on small maps); ``None`` switches one off."""
        vae = lambda c: dataclasses.replace(  # noqa: E731
            c,
            attention_query_chunk=attention_query_chunk,
            conv_matmul_max_pixels=conv_matmul_max_pixels,
        )
        return dataclasses.replace(
            self,
            unet=dataclasses.replace(
                self.unet,
                attention_query_chunk=attention_query_chunk,
                conv_matmul_max_pixels=conv_matmul_max_pixels,
            ),
            vae=vae(self.vae),
            half_decoder=None if self.half_decoder is None else vae(self.half_decoder),
        )

    @property
    def alpha_bar(self) -> float:
        """abar at ``timestep`` (0.00466010 for t = 999)."""
        table = alphas_cumprod(self.beta_start, self.beta_end, self.num_train_timesteps)
        return float(table[self.timestep])

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["unet"] = self.unet.to_dict()
        out["vae"] = self.vae.to_dict()
        out["half_decoder"] = None if self.half_decoder is None else self.half_decoder.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OSEDiffConfig:
        data = dict(data)
        data["unet"] = UNetConfig.from_dict(data["unet"])
        data["vae"] = VAEConfig.from_dict(data["vae"])
        if data.get("half_decoder") is not None:
            data["half_decoder"] = VAEConfig.from_dict(data["half_decoder"])
        return cls(**data)


class OSEDiff(nn.Module):
    """The one-step teacher; see the module docstring."""

    config: OSEDiffConfig

    def setup(self) -> None:
        self.vae = AutoencoderKL(self.config.vae)
        self.unet = UNet2D(self.config.unet)
        if self.config.half_decoder is not None:
            self.half_decoder = Decoder(self.config.half_decoder)

    @property
    def _sf(self) -> float:
        return self.config.vae.scaling_factor

    def upscale(self, lr: jax.Array) -> jax.Array:
        """torch ``interpolate(scale_factor=4, mode='bicubic')`` in fp32 (no clamp)."""
        return bicubic_resize(lr.astype(jnp.float32), scale=self.config.upscale)

    def encode_image(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Upscaled image (B,4H,4W,3) -> scaled latent: ``mean`` (or a sample with ``rng``) x 0.18215."""
        mean, logvar = self.vae.encode(x)
        z = mean if rng is None else sample_latent(mean, logvar, rng)
        return z.astype(jnp.float32) * self._sf

    def encode(self, lr: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """LR (B,H,W,3) in [-1, 1] -> scaled latent (B,H/2,W/2,4)."""
        return self.encode_image(self.upscale(lr), rng)

    def denoise(self, z: jax.Array, text: jax.Array) -> jax.Array:
        """One step at ``timestep``: eps from the UNet, then the closed-form z0 (fp32)."""
        t = jnp.full((z.shape[0],), self.config.timestep, jnp.float32)
        eps = self.unet(z, t, text).astype(jnp.float32)
        abar = self.config.alpha_bar
        return (z.astype(jnp.float32) - np.float32((1 - abar) ** 0.5) * eps) / np.float32(abar**0.5)

    def decode(self, z0: jax.Array) -> jax.Array:
        """Scaled z0 -> image in [-1, 1] (clamped), fp32."""
        return jnp.clip(self.vae.decode(z0 / self._sf).astype(jnp.float32), -1.0, 1.0)

    def latent_features(self, z0: jax.Array) -> jax.Array:
        """``f_T`` from a scaled z0: half-decoder stem of ``post_quant_conv(z0 / 0.18215)``."""
        if self.config.half_decoder is None:
            raise ValueError("OSEDiff features need OSEDiffConfig.half_decoder")
        return self.half_decoder.stem(self.vae.post_quant(z0 / self._sf)).astype(jnp.float32)

    def image_features(self, x: jax.Array) -> jax.Array:
        """``f_R`` of AdcSR ``train.py``: half-decoder stem of ``post_quant_conv(mean(x))``.

        ``x`` (B,H,W,3) in [-1, 1]; the VAE posterior mean is used unscaled. Training applies
        this with SD 2.1-base's VAE params (``vae``) and the frozen half decoder's stem.
        """
        if self.config.half_decoder is None:
            raise ValueError("OSEDiff features need OSEDiffConfig.half_decoder")
        mean, _ = self.vae.encode(x)
        return self.half_decoder.stem(self.vae.post_quant(mean)).astype(jnp.float32)

    def z0(self, lr: jax.Array, text: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Scaled z0 (B,H/2,W/2,4), fp32: ``f_T`` where stage 2 distils in latent space (the
        TAESD-decoder ablation; its ``f_R`` is :meth:`encode_image` of the HR)."""
        return self.denoise(self.encode(lr, rng), text)

    def features(self, lr: jax.Array, text: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """``f_T`` (B,H/2,W/2,C) of AdcSR's stage 2 (the encoder mean when ``rng`` is None)."""
        return self.latent_features(self.denoise(self.encode(lr, rng), text))

    def __call__(self, lr: jax.Array, text: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """LR in [-1, 1] -> SR image (B,4H,4W,3) in [-1, 1]."""
        return self.decode(self.denoise(self.encode(lr, rng), text))

    def everything(self, lr: jax.Array, text: jax.Array) -> tuple[jax.Array, ...]:
        """Image and (if configured) ``f_T``: touches every param, for init and templates."""
        z0 = self.denoise(self.encode(lr), text)
        image = self.decode(z0)
        if self.config.half_decoder is None:
            return (image,)
        return image, self.latent_features(z0)


def abstract_params(config: OSEDiffConfig) -> Any:
    """Shape-only params tree of the teacher (nothing allocated)."""
    module = OSEDiff(config)
    size = 2 ** (len(config.unet.block_out_channels) - 1) * 2
    lr = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    text = jax.ShapeDtypeStruct((1, 1, config.unet.cross_attention_dim or 1), jnp.float32)
    return abstract_params_of(module, lr, text, method=OSEDiff.everything)
