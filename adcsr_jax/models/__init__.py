"""Networks assembled from ``adcsr_jax.nn``: the SD UNet and VAE (others add theirs here)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from adcsr_jax.models.config_utils import UnsupportedConfigError
from adcsr_jax.models.unet import UNet2D, UNetConfig
from adcsr_jax.models.vae import AutoencoderKL, Decoder, Encoder, VAEConfig


def logical_axes(module: nn.Module, *example_args: Any, method: Any = None, **kwargs: Any) -> Any:
    """Tree of logical ``PartitionSpec`` s of ``module``'s params (``jax.eval_shape``: no allocation).

    ``example_args`` are what ``module.init`` would get (arrays or ``jax.ShapeDtypeStruct``).
    """
    abstract = jax.eval_shape(
        lambda a, k: module.init(jax.random.key(0), *a, method=method, **k), example_args, kwargs
    )
    return nn.get_partition_spec(abstract)["params"]


def abstract_params_of(
    module: nn.Module, *example_args: Any, method: Any = None, **kwargs: Any
) -> Any:
    """Plain tree of ``jax.ShapeDtypeStruct`` of ``module``'s params (no allocation)."""
    abstract = jax.eval_shape(
        lambda a, k: module.init(jax.random.key(0), *a, method=method, **k), example_args, kwargs
    )
    return nn.meta.unbox(abstract)["params"]


def init_params(
    module: nn.Module, rng: jax.Array, *example_args: Any, method: Any = None, **kwargs: Any
) -> Any:
    """Random params as a plain nested dict (logical-axis boxes removed)."""
    return nn.meta.unbox(module.init(rng, *example_args, method=method, **kwargs))["params"]


__all__ = [
    "AutoencoderKL",
    "Decoder",
    "Encoder",
    "UNet2D",
    "UNetConfig",
    "UnsupportedConfigError",
    "VAEConfig",
    "abstract_params_of",
    "init_params",
    "logical_axes",
]
