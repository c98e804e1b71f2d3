"""PSNR as AdcSR calls pyiqa: ``psnr(test_y_channel=True, color_space='ycbcr')``.

Y of BT.601 YCbCr in [0, 1] (not rounded), ``10 log10(1 / (mse + 1e-8))``, no border crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.eval.base import check_batch
from adcsr_jax.eval.color import rgb_to_y


@jax.jit
def psnr_y(sr: jnp.ndarray, hr: jnp.ndarray) -> jnp.ndarray:
    """Per-image PSNR (dB) on the YCbCr Y channel; float64 when x64 is enabled."""
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    diff = rgb_to_y(sr, "ycbcr").astype(dtype) - rgb_to_y(hr, "ycbcr").astype(dtype)
    mse = jnp.mean(diff * diff, axis=(1, 2))
    return 10.0 * jnp.log10(1.0 / (mse + 1e-8))


@dataclass(frozen=True)
class PSNR:
    """Full-reference PSNR on Y (higher is better)."""

    name: str = "psnr"
    higher_is_better: bool = True
    needs_reference: bool = True

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None = None) -> np.ndarray:
        sr, hr = check_batch(self.name, sr, hr, self.needs_reference)
        with jax.enable_x64(True):
            return np.asarray(psnr_y(jnp.asarray(sr), jnp.asarray(hr)), np.float64)


def create(weights_dir: str | Path | None = None, **opts: Any) -> PSNR:
    """Factory for the registry; PSNR has no weights or options."""
    if opts:
        raise TypeError(f"psnr takes no options, got {sorted(opts)}")
    return PSNR()
