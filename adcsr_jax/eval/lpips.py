"""LPIPS v0.1 (pyiqa / richzhang's ``lpips``): AlexNet (the paper's metric) and VGG16 (stage 1's loss).

Input x in [0, 1] -> 2x - 1 -> ScalingLayer ((x - shift) / scale) -> backbone ReLU taps ->
channel unit-normalisation (eps 1e-10) -> squared difference -> 1x1 linear head (no bias) ->
spatial mean -> sum over taps. ``lpips_distance`` is a pure, differentiable function usable as a
training loss; ``LPIPS`` is the evaluation metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.eval.base import check_batch
from adcsr_jax.models.backbones import Params, alexnet_features, vgg16_features

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
BACKBONES = {"alex": alexnet_features, "vgg": vgg16_features}


def _normalize(feat: jnp.ndarray, eps: float = 1e-10) -> jnp.ndarray:
    norm = jnp.sqrt(jnp.sum(feat * feat, axis=-1, keepdims=True))
    return feat / (norm + eps)


def lpips_distance(
    params: Params, x: jnp.ndarray, y: jnp.ndarray, net: str = "alex"
) -> jnp.ndarray:
    """Per-image LPIPS between NHWC batches ``x`` and ``y`` in [0, 1]; shape (N,)."""
    shift = jnp.asarray(SHIFT, x.dtype)
    scale = jnp.asarray(SCALE, x.dtype)
    both = jnp.concatenate([x, y], axis=0) * 2.0 - 1.0
    taps = BACKBONES[net](params, (both - shift) / scale)
    n = x.shape[0]
    total = jnp.zeros((n,), x.dtype)
    for i, feat in enumerate(taps):
        diff = (_normalize(feat[:n]) - _normalize(feat[n:])) ** 2
        total = total + jnp.mean(diff @ params[f"lin{i}"].astype(x.dtype), axis=(1, 2))
    return total


@partial(jax.jit, static_argnames="net")
def _lpips_jit(params: Params, x: jnp.ndarray, y: jnp.ndarray, net: str) -> jnp.ndarray:
    return lpips_distance(params, x, y, net)


def load_lpips_params(net: str = "alex", weights_dir: str | Path | None = None) -> Params:
    """Backbone + linear heads from the metric cache (``adcsr convert metrics``)."""
    from adcsr_jax.weights.metrics import load_weights

    if net not in BACKBONES:
        raise ValueError(f"LPIPS net must be one of {sorted(BACKBONES)}, got {net!r}")
    return {k: jnp.asarray(v) for k, v in load_weights(f"lpips_{net}", weights_dir).items()}


@dataclass
class LPIPS:
    """LPIPS v0.1 metric (lower is better)."""

    params: Params = field(repr=False)
    net: str = "alex"
    name: str = "lpips"
    higher_is_better: bool = False
    needs_reference: bool = True

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None = None) -> np.ndarray:
        sr, hr = check_batch(self.name, sr, hr, self.needs_reference)
        return np.asarray(_lpips_jit(self.params, jnp.asarray(sr), jnp.asarray(hr), self.net))


def create(weights_dir: str | Path | None = None, net: str = "alex", **opts: Any) -> LPIPS:
    """LPIPS with the AlexNet backbone (the paper's ``lpips``); ``net='vgg'`` for VGG16."""
    if opts:
        raise TypeError(f"lpips takes only 'net', got {sorted(opts)}")
    name = "lpips" if net == "alex" else f"lpips-{net}"
    return LPIPS(load_lpips_params(net, weights_dir), net=net, name=name)


def create_vgg(weights_dir: str | Path | None = None, **opts: Any) -> LPIPS:
    """LPIPS with the VGG16 backbone (stage 1's perceptual loss)."""
    return create(weights_dir, net="vgg", **opts)
