"""Torch state dict -> params for our networks (UNet, VAE, decoder), and their abstract templates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.models import (
    AutoencoderKL,
    Decoder,
    UNet2D,
    UNetConfig,
    VAEConfig,
    abstract_params_of,
)
from adcsr_jax.weights.mapping import params_from_torch


def unet_example_inputs(config: UNetConfig) -> tuple[Any, ...]:
    """Abstract ``(sample, timesteps, encoder_hidden_states)`` that trace every UNet param."""
    size = 2 ** (len(config.block_out_channels) - 1)
    sample = jax.ShapeDtypeStruct((1, size, size, config.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32) if config.time_embedding else None
    ctx = None
    if config.cross_attention_dim is not None:
        ctx = jax.ShapeDtypeStruct((1, 1, config.cross_attention_dim), jnp.float32)
    return sample, t, ctx


def vae_example_inputs(config: VAEConfig) -> tuple[Any, ...]:
    size = 2 ** (len(config.block_out_channels) - 1)
    return (jax.ShapeDtypeStruct((1, size, size, config.in_channels), jnp.float32),)


def decoder_example_inputs(config: VAEConfig) -> tuple[Any, ...]:
    return (jax.ShapeDtypeStruct((1, 1, 1, config.latent_channels), jnp.float32),)


def unet_template(config: UNetConfig) -> Any:
    return abstract_params_of(UNet2D(config), *unet_example_inputs(config))


def vae_template(config: VAEConfig) -> Any:
    return abstract_params_of(AutoencoderKL(config), *vae_example_inputs(config))


def decoder_template(config: VAEConfig) -> Any:
    return abstract_params_of(Decoder(config), *decoder_example_inputs(config))


def unet_params_from_torch(
    state_dict: Mapping[str, np.ndarray],
    config: UNetConfig,
    *,
    source: str = "state dict",
    ignore_prefixes: Iterable[str] = (),
    consume: bool = False,
) -> dict[str, Any]:
    """UNet params (fp32 numpy) for ``config`` from a diffusers-named state dict."""
    return params_from_torch(
        state_dict,
        unet_template(config),
        source=source,
        target="UNet2D",
        ignore_prefixes=ignore_prefixes,
        consume=consume,
    )


def vae_params_from_torch(
    state_dict: Mapping[str, np.ndarray],
    config: VAEConfig,
    *,
    source: str = "state dict",
    ignore_prefixes: Iterable[str] = (),
    consume: bool = False,
) -> dict[str, Any]:
    """AutoencoderKL params from a diffusers-named state dict (legacy attention names too)."""
    return params_from_torch(
        state_dict,
        vae_template(config),
        source=source,
        target="AutoencoderKL",
        ignore_prefixes=ignore_prefixes,
        consume=consume,
    )


def decoder_params_from_torch(
    state_dict: Mapping[str, np.ndarray],
    config: VAEConfig,
    *,
    source: str = "state dict",
    ignore_prefixes: Iterable[str] = (),
    consume: bool = False,
) -> dict[str, Any]:
    """Decoder params (names without the ``decoder.`` prefix) for ``config.decoder_widths``."""
    return params_from_torch(
        state_dict,
        decoder_template(config),
        source=source,
        target="Decoder",
        ignore_prefixes=ignore_prefixes,
        consume=consume,
    )
