"""Networks assembled from ``adcsr_jax.nn``: the SD UNet and VAE (others add theirs here)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax

from adcsr_jax.models.config_utils import UnsupportedConfigError
from adcsr_jax.models.unet import UNet2D, UNetConfig
from adcsr_jax.models.vae import AutoencoderKL, Decoder, Encoder, VAEConfig


def _abstract_init(module: nn.Module, args: tuple, kwargs: dict, method: Any) -> Any:
    """``jax.eval_shape`` of ``module.init`` (boxed variables of ``jax.ShapeDtypeStruct`` s).

    Only shapes and dtypes of the inputs matter, so the result is memoised on (module, method,
    input shapes): tracing an SD UNet's ``init`` takes seconds on a CPU and the same templates
    are asked for many times (teacher and SD UNet, discriminator, every loader check). Each call
    returns fresh containers. The key is an argument (a tracer), not a constant: under
    ``jax.ensure_compile_time_eval`` (stage 2's ``init`` loads weights in one) constant
    initialisers would otherwise run eagerly, one compilation per parameter shape."""
    abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") else x  # noqa: E731
    args = tuple(jax.tree.map(abstract, args))
    items = tuple(sorted((k, jax.tree.map(abstract, v)) for k, v in kwargs.items()))
    try:
        hash((module, method, args, items))
    except TypeError:  # an unhashable input: trace every time
        return _traced_init(module, method, args, items)
    return jax.tree.map(lambda x: x, _cached_init(module, method, args, items))


def _traced_init(module: nn.Module, method: Any, args: tuple, items: tuple) -> Any:
    return jax.eval_shape(
        lambda key, a, k: module.init(key, *a, method=method, **k),
        jax.random.key(0),
        args,
        dict(items),
    )


_cached_init = functools.lru_cache(maxsize=64)(_traced_init)


def logical_axes(module: nn.Module, *example_args: Any, method: Any = None, **kwargs: Any) -> Any:
    """Tree of logical ``PartitionSpec`` s of ``module``'s params (``jax.eval_shape``: no allocation).

    ``example_args`` are what ``module.init`` would get (arrays or ``jax.ShapeDtypeStruct``).
    """
    abstract = _abstract_init(module, example_args, kwargs, method)
    return nn.get_partition_spec(abstract)["params"]


def abstract_params_of(
    module: nn.Module, *example_args: Any, method: Any = None, **kwargs: Any
) -> Any:
    """Plain tree of ``jax.ShapeDtypeStruct`` of ``module``'s params (no allocation)."""
    abstract = _abstract_init(module, example_args, kwargs, method)
    return nn.meta.unbox(abstract)["params"]


def init_params(
    module: nn.Module, rng: jax.Array, *example_args: Any, method: Any = None, **kwargs: Any
) -> Any:
    """Random params as a plain nested dict (logical-axis boxes removed).

    Jitted: Flax's ``init`` run eagerly compiles one program per operation (a tiny SD UNet: 50
    s on a CPU); jitted it is one program. Array inputs are traced, anything else (``None``,
    flags) is passed as it is."""
    is_array = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")  # noqa: E731
    pos = {i: a for i, a in enumerate(example_args) if is_array(a)}
    kw = {k: v for k, v in kwargs.items() if is_array(v)}

    def init(key: jax.Array, pos: dict, kw: dict) -> Any:
        args = [pos.get(i, a) for i, a in enumerate(example_args)]
        variables = module.init(key, *args, method=method, **{**kwargs, **kw})
        return nn.meta.unbox(variables)["params"]

    return jax.jit(init)(rng, pos, kw)


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
