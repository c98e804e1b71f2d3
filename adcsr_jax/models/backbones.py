"""ImageNet AlexNet and VGG16 feature extractors (torchvision ``features``), NHWC, pure functions.

Params are the dicts of ``adcsr_jax.weights.metrics.load_weights`` (``conv{i}_kernel`` HWIO,
``conv{i}_bias``). The functions return the ReLU taps LPIPS and DISTS read; VGG16 takes the
pooling as an argument because DISTS replaces max-pooling by L2 pooling.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

Params = dict[str, jnp.ndarray]

VGG16_WIDTHS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_TAPS = (1, 3, 6, 9, 12)  # conv indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None, stride: int, pad: int):
    """torch ``Conv2d`` (zero padding ``pad`` on every side) on NHWC with an HWIO kernel."""
    y = jax.lax.conv_general_dilated(
        x,
        kernel.astype(x.dtype),
        window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y if bias is None else y + bias.astype(x.dtype)


def max_pool(x: jnp.ndarray, size: int, stride: int) -> jnp.ndarray:
    """torch ``MaxPool2d(size, stride)`` without padding (floor mode).

    The maximum of ``size`` strided row slices, then of ``size`` column slices: the same values
    as ``lax.reduce_window`` (NaN included), about 3x faster on XLA:CPU
    (``scripts/bench_alexnet_layers.py``: 1.7 against 5.4 ms at 127x127x64, batch 8).
    """
    ho, wo = ((d - size) // stride + 1 for d in x.shape[1:3])
    rows = [x[:, i : i + stride * (ho - 1) + 1 : stride] for i in range(size)]
    h = functools.reduce(jnp.maximum, rows)
    cols = [h[:, :, j : j + stride * (wo - 1) + 1 : stride] for j in range(size)]
    return functools.reduce(jnp.maximum, cols)


def alexnet_features(params: Params, x: jnp.ndarray) -> list[jnp.ndarray]:
    """The five ReLU outputs of torchvision AlexNet ``features`` (LPIPS taps)."""
    taps = []
    h = jax.nn.relu(conv2d(x, params["conv0_kernel"], params["conv0_bias"], 4, 2))
    taps.append(h)
    h = max_pool(h, 3, 2)
    h = jax.nn.relu(conv2d(h, params["conv1_kernel"], params["conv1_bias"], 1, 2))
    taps.append(h)
    h = max_pool(h, 3, 2)
    for i in (2, 3, 4):
        h = jax.nn.relu(conv2d(h, params[f"conv{i}_kernel"], params[f"conv{i}_bias"], 1, 1))
        taps.append(h)
    return taps


def vgg16_features(
    params: Params, x: jnp.ndarray, pool: Callable[[jnp.ndarray], jnp.ndarray] | None = None
) -> list[jnp.ndarray]:
    """relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of torchvision VGG16 ``features``.

    ``pool`` replaces the 2x2 max-pooling between stages (DISTS uses L2 pooling).
    """
    pool = pool or (lambda h: max_pool(h, 2, 2))
    taps, conv, h = [], 0, x
    for width in VGG16_WIDTHS:
        if width == "M":
            h = pool(h)
            continue
        h = jax.nn.relu(conv2d(h, params[f"conv{conv}_kernel"], params[f"conv{conv}_bias"], 1, 1))
        if conv in VGG16_TAPS:
            taps.append(h)
        conv += 1
    return taps


def l2_pool(x: jnp.ndarray) -> jnp.ndarray:
    """DISTS ``L2pooling``: sqrt(conv(x^2, g) + 1e-12), stride 2, zero padding 1, per channel.

    g = outer(a, a) / sum with a = Hann(5)[1:-1] = (0.5, 1, 0.5), i.e. the separable
    (0.25, 0.5, 0.25) filter on both axes; applied as strided slices (XLA:CPU's depthwise
    convolution is far slower than this).
    """
    h, w = x.shape[1], x.shape[2]
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    p = jnp.pad(x * x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    taps = (0.25, 0.5, 0.25)
    rows = sum(t * p[:, i : i + 2 * ho - 1 : 2] for i, t in enumerate(taps))
    y = sum(t * rows[:, :, j : j + 2 * wo - 1 : 2] for j, t in enumerate(taps))
    return jnp.sqrt(y + 1e-12)
