"""Logical axis names of every parameter, and the layer constructors that attach them.

Parameters are created through :func:`conv` and :func:`dense` (and the norms in ``norm.py``), whose
initialisers are wrapped in ``flax.linen.with_logical_partitioning``. ``module.init`` therefore returns
``nn.Partitioned`` boxes (strip them with ``flax.linen.meta.unbox``); ``module.apply`` accepts plain
nested dicts of arrays, which is what the weight loaders return. A sharding config maps these names
to mesh axes (``data``, ``fsdp``, ``tensor``); :func:`adcsr_jax.models.logical_axes` returns the tree
of logical ``PartitionSpec`` s without allocating anything.

Vocabulary (small on purpose):

=============  =====================================================================
``conv_h``     conv kernel height (never worth sharding)
``conv_w``     conv kernel width
``conv_in``    conv input channels
``conv_out``   conv output channels (also conv biases)
``embed``      token width inside transformers and attention (Dense in/out of proj_in,
               proj_out, to_q/k/v, to_out, the FF input and output)
``heads``      attention inner width (heads x head_dim): output of to_q/k/v, input of to_out
``mlp``        feed-forward hidden width (GEGLU projection output, FF output input)
``context``    encoder (text) width read by cross-attention to_k / to_v
``time``       time-embedding width
``norm``       GroupNorm / LayerNorm scale and bias
``lora_rank``  the rank of a LoRA adapter (``nn/lora.py``; A and B keep the base kernel's
               other axis names)
=============  =====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adcsr_jax.nn.conv import conv_general_dilated_for, late_backward

CONV_KERNEL = ("conv_h", "conv_w", "conv_in", "conv_out")

Padding = str | Sequence[tuple[int, int]]


def conv(
    features: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    padding: Padding | None = None,
    dtype: Any = jnp.float32,
    name: str | None = None,
    matmul_max_pixels: int | None = None,
) -> nn.Conv:
    """NHWC ``nn.Conv`` with torch-style explicit padding (default ``kernel_size // 2``).

    ``matmul_max_pixels``: run the conv as one im2col matmul when its output map has at most
    this many pixels (:mod:`adcsr_jax.nn.conv`; faster on XLA:CPU, same math). The backward
    pass is :func:`adcsr_jax.nn.conv.late_backward`'s (same gradients, less memory held).
    """
    if padding is None:
        p = kernel_size // 2
        padding = ((p, p), (p, p))
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=padding,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), CONV_KERNEL),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
        conv_general_dilated=late_backward(conv_general_dilated_for(matmul_max_pixels)),
        name=name,
    )


def dense(
    features: int,
    axes: tuple[str, str] = ("embed", "embed"),
    *,
    use_bias: bool = True,
    dtype: Any = jnp.float32,
    name: str | None = None,
) -> nn.Dense:
    """``nn.Dense`` whose kernel carries the logical axes ``(in, out)`` and bias ``(out,)``."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
        name=name,
    )
