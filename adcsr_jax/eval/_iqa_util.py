"""Helpers shared by the learned no-reference metrics (MUSIQ, MANIQA, CLIP-IQA).

- ``resolve_weight_file``: find the user-supplied weight file (explicit path, environment variable,
  or a file of the expected name in ``weights_dir``) or fail with a message saying where to get it.
- ``resize_matrix``: 1-D interpolation matrices that reproduce ``torch.nn.functional.interpolate``
  (bicubic A=-0.75 / bilinear, ``align_corners=False``, no antialias), so that resizing is two
  matmuls inside a jitted function.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from adcsr_jax.eval.base import MissingWeightError


def batched_scores(
    fn: Callable[..., Any], params: Any, images: np.ndarray, batch_size: int, *extra: Any
) -> np.ndarray:
    """``fn(params, batch, *extra)`` over ``images`` in chunks of ``batch_size``, as float64."""
    out = [
        np.asarray(fn(params, jnp.asarray(images[i : i + batch_size]), *extra))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float64)


def resolve_weight_file(
    metric: str,
    weights_path: str | os.PathLike[str] | None,
    env_var: str,
    filename: str,
    where: str,
    weights_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the weight file for ``metric`` or raise ``MissingWeightError`` naming it.

    Order: ``weights_path`` argument, then ``$env_var``, then ``weights_dir/filename``.
    """
    candidates: list[tuple[str, Path]] = []
    if weights_path:
        candidates.append(("argument weights_path", Path(weights_path)))
    elif os.environ.get(env_var):
        candidates.append((f"${env_var}", Path(os.environ[env_var])))
    elif weights_dir is not None:
        candidates.append(("weights_dir", Path(weights_dir) / filename))
    for _, path in candidates:
        if path.is_file():
            return path
    tried = "; ".join(f"{how}: {p}" for how, p in candidates) or "nothing given"
    raise MissingWeightError(
        f"{metric} needs the weight file {filename} (tried {tried}). It ships in no package and "
        f"cannot be downloaded here: get it from {where}, then pass weights_path=... or set "
        f"{env_var}=/path/to/{filename}."
    )


def _cubic(t: np.ndarray, a: float = -0.75) -> list[np.ndarray]:
    """Keys cubic-convolution weights for the 4 taps at offsets -1, 0, 1, 2 (torch's A=-0.75)."""

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def resize_matrix(
    in_size: int, out_size: int, mode: str, scale_factor: float | None = None
) -> np.ndarray:
    """(out_size, in_size) float32 matrix equal to torch ``interpolate`` along one axis.

    ``scale_factor``: when torch was called with ``scale_factor=`` (not ``size=``), the source
    coordinate uses ``1/scale_factor`` instead of ``in/out``.
    """
    f32 = np.float32
    scale = f32(1.0 / scale_factor) if scale_factor else f32(in_size) / f32(out_size)
    dst = np.arange(out_size, dtype=f32)
    src = (dst + f32(0.5)) * scale - f32(0.5)
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if mode == "bicubic":
        idx = np.floor(src).astype(np.int64)
        t = (src - idx).astype(f32)
        for k, w in enumerate(_cubic(t)):
            np.add.at(mat, (rows, np.clip(idx - 1 + k, 0, in_size - 1)), w)
    elif mode == "bilinear":
        src = np.maximum(src, f32(0))
        idx0 = np.floor(src).astype(np.int64)
        idx1 = np.minimum(idx0 + 1, in_size - 1)
        lam = (src - idx0).astype(f32)
        np.add.at(mat, (rows, idx0), f32(1) - lam)
        np.add.at(mat, (rows, idx1), lam)
    else:
        raise ValueError(f"unsupported resize mode {mode!r} (bicubic, bilinear)")
    return mat.astype(np.float32)


def scaled_size(size: int, scale_factor: float) -> int:
    """Output length torch ``interpolate(scale_factor=...)`` gives: floor(size * scale)."""
    return int(math.floor(size * scale_factor))
