"""DISTS (Ding et al. 2020; pyiqa's ``dists``): VGG16 with L2 pooling, texture + structure terms.

Features [x, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3] of (x - ImageNet mean) / std; alpha and
beta (1475 channels) normalised by their joint sum; c1 = c2 = 1e-6; score = 1 - (S1 + S2 terms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.eval.base import check_batch
from adcsr_jax.models.backbones import Params, l2_pool, vgg16_features

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CHANNELS = (3, 64, 128, 256, 512, 512)


def dists_distance(params: Params, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Per-image DISTS between NHWC batches in [0, 1]; shape (N,)."""
    n = x.shape[0]
    both = jnp.concatenate([x, y], axis=0)
    h = (both - jnp.asarray(MEAN, x.dtype)) / jnp.asarray(STD, x.dtype)
    feats = [both, *vgg16_features(params, h, pool=l2_pool)]
    w_sum = jnp.sum(params["alpha"]) + jnp.sum(params["beta"])
    alpha = params["alpha"] / w_sum
    beta = params["beta"] / w_sum
    c1 = c2 = 1e-6
    dist1 = jnp.zeros((n,), x.dtype)
    dist2 = jnp.zeros((n,), x.dtype)
    start = 0
    for feat, width in zip(feats, CHANNELS, strict=True):
        a, b = alpha[start : start + width], beta[start : start + width]
        start += width
        f0, f1 = feat[:n], feat[n:]
        m0 = jnp.mean(f0, axis=(1, 2))
        m1 = jnp.mean(f1, axis=(1, 2))
        s1 = (2 * m0 * m1 + c1) / (m0**2 + m1**2 + c1)
        dist1 = dist1 + s1 @ a
        v0 = jnp.mean((f0 - m0[:, None, None]) ** 2, axis=(1, 2))
        v1 = jnp.mean((f1 - m1[:, None, None]) ** 2, axis=(1, 2))
        cov = jnp.mean(f0 * f1, axis=(1, 2)) - m0 * m1
        s2 = (2 * cov + c2) / (v0 + v1 + c2)
        dist2 = dist2 + s2 @ b
    return 1.0 - (dist1 + dist2)


_dists_jit = jax.jit(dists_distance)


def load_dists_params(weights_dir: str | Path | None = None) -> Params:
    """VGG16 convs + alpha/beta from the metric cache (``adcsr convert metrics``)."""
    from adcsr_jax.weights.metrics import load_weights

    return {k: jnp.asarray(v) for k, v in load_weights("dists", weights_dir).items()}


@dataclass
class DISTS:
    """DISTS metric (lower is better)."""

    params: Params = field(repr=False)
    name: str = "dists"
    higher_is_better: bool = False
    needs_reference: bool = True

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None = None) -> np.ndarray:
        sr, hr = check_batch(self.name, sr, hr, self.needs_reference)
        return np.asarray(_dists_jit(self.params, jnp.asarray(sr), jnp.asarray(hr)))


def create(weights_dir: str | Path | None = None, **opts: Any) -> DISTS:
    """DISTS with the shipped VGG16 and alpha/beta weights."""
    if opts:
        raise TypeError(f"dists takes no options, got {sorted(opts)}")
    return DISTS(load_dists_params(weights_dir))
