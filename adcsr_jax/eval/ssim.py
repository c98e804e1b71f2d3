"""SSIM as AdcSR calls pyiqa: ``ssim(test_y_channel=True, color_space='ycbcr')``.

Y of BT.601 YCbCr x255, rounded to integers, in float64; 11x11 Gaussian window (sigma 1.5,
MATLAB ``fspecial``, stored in float32 as pyiqa does); 'valid' filtering; C1 = (0.01*255)^2,
C2 = (0.03*255)^2; the contrast-structure map clamped at 0 (pyiqa's ReLU); no downsampling; mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.eval.base import check_batch
from adcsr_jax.eval.color import rgb_to_y255_rounded


def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian whose outer product is MATLAB ``fspecial('gaussian')``."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def filter_valid(x: jnp.ndarray, g: jnp.ndarray) -> jnp.ndarray:
    """Separable 'valid' correlation of (N, H, W) maps with the 1-D kernel ``g`` on both axes."""
    k = g.shape[0]
    h_out, w_out = x.shape[1] - k + 1, x.shape[2] - k + 1
    rows = sum(g[i] * x[:, i : i + h_out, :] for i in range(k))
    return sum(g[j] * rows[:, :, j : j + w_out] for j in range(k))


def ssim_map_mean(x: jnp.ndarray, y: jnp.ndarray, g: jnp.ndarray, data_range: float = 255.0):
    """pyiqa's ``ssim`` on (N, H, W) luma maps, with the ReLU on the cs map."""
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu1, mu2 = filter_valid(x, g), filter_valid(y, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = filter_valid(x * x, g) - mu1_sq
    sigma2_sq = filter_valid(y * y, g) - mu2_sq
    sigma12 = filter_valid(x * y, g) - mu1_mu2
    cs_map = jax.nn.relu((2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2))
    ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    return jnp.mean(ssim_map, axis=(1, 2))


@jax.jit
def ssim_y(sr: jnp.ndarray, hr: jnp.ndarray) -> jnp.ndarray:
    """Per-image SSIM on rounded YCbCr Y (float64 when x64 is enabled, as pyiqa)."""
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    x = rgb_to_y255_rounded(sr, "ycbcr").astype(dtype)
    y = rgb_to_y255_rounded(hr, "ycbcr").astype(dtype)
    if min(x.shape[1:]) < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels, got {x.shape[1:]}")
    return ssim_map_mean(x, y, jnp.asarray(gaussian_1d(11, 1.5), dtype))


@dataclass(frozen=True)
class SSIM:
    """Full-reference SSIM on Y (higher is better)."""

    name: str = "ssim"
    higher_is_better: bool = True
    needs_reference: bool = True

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None = None) -> np.ndarray:
        sr, hr = check_batch(self.name, sr, hr, self.needs_reference)
        with jax.enable_x64(True):
            return np.asarray(ssim_y(jnp.asarray(sr), jnp.asarray(hr)), np.float64)


def create(weights_dir: str | Path | None = None, **opts: Any) -> SSIM:
    """Factory for the registry; SSIM has no weights or options."""
    if opts:
        raise TypeError(f"ssim takes no options, got {sorted(opts)}")
    return SSIM()
