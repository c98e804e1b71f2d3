"""NIQE (Mittal et al. 2012) as pyiqa computes it (``niqe``, defaults: Y of YIQ, no crop).

Y = round(255 * (0.299R + 0.587G + 0.114B)) in float64; image cropped to whole 96x96 blocks; at
two scales (the second by MATLAB bicubic imresize 0.5 with antialiasing): MSCN normalisation with
a 7x7 Gaussian (sigma 7/6, replicate padding, sigma + 1 in the denominator), 18 AGGD features per
block (96 and 48 px blocks); a multivariate Gaussian fitted to the blocks (NaN rows dropped) is
compared with the pristine model: sqrt(d^T pinv((cov_pris + cov) / 2) d). Lower is better.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from adcsr_jax.eval.base import check_batch
from adcsr_jax.eval.color import rgb_to_y255_rounded
from adcsr_jax.resize import imresize_matrix

BLOCK = 96
# pyiqa's torch.arange(0.2, 10 + 0.001, 0.001) is float32, then cast to the image dtype.
_GAMMA = (0.2 + 0.001 * np.arange(9801)).astype(np.float32).astype(np.float64)
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``, rounded through float32 as pyiqa stores it."""
    m = (size - 1.0) / 2.0
    y, x = np.ogrid[-m : m + 1, -m : m + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    h /= h.sum()
    return h.astype(np.float32).astype(np.float64)


def _aggd(block: jnp.ndarray, gam: jnp.ndarray):
    """pyiqa ``estimate_aggd_param`` on (B, h, w) blocks -> (alpha, beta_l, beta_r), each (B,)."""
    r_gam = jnp.exp(2 * gammaln(2.0 / gam) - (gammaln(1.0 / gam) + gammaln(3.0 / gam)))
    left, right = block < 0, block > 0
    sq = block * block
    left_std = jnp.sqrt(jnp.sum(sq * left, axis=(1, 2)) / jnp.sum(left, axis=(1, 2)))
    right_std = jnp.sqrt(jnp.sum(sq * right, axis=(1, 2)) / jnp.sum(right, axis=(1, 2)))
    gammahat = left_std / right_std
    rhat = jnp.mean(jnp.abs(block), axis=(1, 2)) ** 2 / jnp.mean(sq, axis=(1, 2))
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    alpha = gam[jnp.argmin(jnp.abs(r_gam[None, :] - rhatnorm[:, None]), axis=1)]
    factor = jnp.sqrt(jnp.exp(gammaln(1 / alpha) - gammaln(3 / alpha)))
    return alpha, left_std * factor, right_std * factor


def _block_features(blocks: jnp.ndarray, gam: jnp.ndarray) -> jnp.ndarray:
    """18 NIQE features per block: (B, h, w) -> (B, 18)."""
    alpha, bl, br = _aggd(blocks, gam)
    feats = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        shifted = jnp.roll(blocks, shift, axis=(1, 2))
        alpha, bl, br = _aggd(blocks * shifted, gam)
        mean = (br - bl) * jnp.exp(gammaln(2 / alpha) - gammaln(1 / alpha))
        feats += [alpha, mean, bl, br]
    return jnp.stack(feats, axis=-1)


def _mscn(img: jnp.ndarray, window: jnp.ndarray) -> jnp.ndarray:
    """(img - mu) / (sigma + 1) with a Gaussian window and replicate padding; img (N, H, W)."""
    k = window.shape[0]
    pad = k // 2
    h, w = img.shape[1], img.shape[2]

    def filt(x: jnp.ndarray) -> jnp.ndarray:
        p = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
        return sum(window[i, j] * p[:, i : i + h, j : j + w] for i in range(k) for j in range(k))

    mu = filt(img)
    var = filt(img * img)
    sigma = jnp.sqrt(jnp.abs(var - mu * mu) + np.finfo(np.float64).eps)
    return (img - mu) / (sigma + 1)


def _to_blocks(img: jnp.ndarray, size: int) -> jnp.ndarray:
    n, h, w = img.shape
    nh, nw = h // size, w // size
    blocks = img[:, : nh * size, : nw * size].reshape(n, nh, size, nw, size)
    return blocks.transpose(0, 1, 3, 2, 4).reshape(n * nh * nw, size, size), nh * nw


@partial(jax.jit, static_argnames=())
def niqe_scores(rgb: jnp.ndarray, mu_pris: jnp.ndarray, cov_pris: jnp.ndarray) -> jnp.ndarray:
    """Per-image NIQE of float32 NHWC RGB in [0, 1] (run with x64 enabled for pyiqa parity)."""
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    img = rgb_to_y255_rounded(rgb, "yiq").astype(dtype)
    n, h, w = img.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh == 0 or nw == 0:
        raise ValueError(f"niqe needs images of at least {BLOCK}x{BLOCK} pixels, got {(h, w)}")
    img = img[:, : nh * BLOCK, : nw * BLOCK]
    window = jnp.asarray(fspecial_gaussian(7, 7.0 / 6.0), dtype)
    gam = jnp.asarray(_GAMMA, dtype)
    a_h = jnp.asarray(imresize_matrix(nh * BLOCK, nh * BLOCK // 2, 0.5))
    a_w = jnp.asarray(imresize_matrix(nw * BLOCK, nw * BLOCK // 2, 0.5))
    feats = []
    for scale in (1, 2):
        blocks, count = _to_blocks(_mscn(img, window), BLOCK // scale)
        feats.append(_block_features(blocks, gam).reshape(n, count, 18))
        if scale == 1:
            small = (img / 255.0).astype(jnp.float32)
            small = jnp.einsum("oh,nhw,pw->nop", a_h, small, a_w, precision="highest")
            img = small.astype(dtype) * 255.0
    dist = jnp.concatenate(feats, axis=-1)  # (N, blocks, 36)
    nan = jnp.isnan(dist)
    mu = jnp.sum(jnp.where(nan, 0, dist), axis=1) / jnp.sum(~nan, axis=1)
    rows = ~jnp.any(nan, axis=-1, keepdims=True)  # (N, blocks, 1)
    clean = jnp.where(rows, dist, 0)
    count = jnp.sum(rows, axis=1)  # (N, 1)
    centred = jnp.where(rows, clean - jnp.sum(clean, axis=1, keepdims=True) / count[:, None], 0)
    cov = jnp.einsum("nbi,nbj->nij", centred, centred) / (count[:, :, None] - 1)
    inv = jnp.linalg.pinv((cov_pris[None] + cov) / 2, rtol=36 * np.finfo(np.float64).eps)
    d = mu_pris[None] - mu
    return jnp.sqrt(jnp.einsum("ni,nij,nj->n", d, inv, d))


@dataclass
class NIQE:
    """No-reference NIQE (lower is better)."""

    mu_pris: np.ndarray = field(repr=False)
    cov_pris: np.ndarray = field(repr=False)
    name: str = "niqe"
    higher_is_better: bool = False
    needs_reference: bool = False

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None = None) -> np.ndarray:
        sr, _ = check_batch(self.name, sr, None, False)
        with jax.enable_x64(True):
            out = niqe_scores(
                jnp.asarray(sr), jnp.asarray(self.mu_pris), jnp.asarray(self.cov_pris)
            )
            return np.asarray(out, np.float64)


def create(weights_dir: str | Path | None = None, **opts: Any) -> NIQE:
    """NIQE with the pristine model shipped in basicsr 1.4.2 (= pyiqa's niqe_modelparameters.mat)."""
    from adcsr_jax.weights.metrics import load_weights

    if opts:
        raise TypeError(f"niqe takes no options, got {sorted(opts)}")
    params = load_weights("niqe", weights_dir)
    return NIQE(
        np.asarray(params["mu_pris_param"], np.float64).reshape(-1),
        np.asarray(params["cov_pris_param"], np.float64),
    )
