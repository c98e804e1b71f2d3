"""The metric interface every image-quality metric follows, and the registry that builds them.

A metric is any object with

- ``name: str`` (the paper's lower-case name, e.g. ``"lpips"``),
- ``higher_is_better: bool``,
- ``needs_reference: bool`` (full-reference metrics need ``hr``),
- ``__call__(sr, hr=None) -> np.ndarray`` returning one float score per image (shape ``(N,)``)
  for float32 NHWC RGB batches in [0, 1]; ``sr`` and ``hr`` have the same shape.

Metric modules expose a factory ``create(weights_dir=None, **opts) -> Metric``. ``get_metric``
imports the module only when the metric is asked for, so a missing optional dependency or weight
file fails for that metric alone, with a message naming what is missing.

FID is a folder-level metric (features per image, then statistics of the whole folder); it has its
own API in ``adcsr_jax.eval.fid`` and is handled separately by the evaluator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

# Paper name -> "module:factory". Modules are imported lazily by ``get_metric``.
REGISTRY: dict[str, str] = {
    "psnr": "adcsr_jax.eval.psnr:create",
    "ssim": "adcsr_jax.eval.ssim:create",
    "lpips": "adcsr_jax.eval.lpips:create",
    "lpips-vgg": "adcsr_jax.eval.lpips:create_vgg",
    "dists": "adcsr_jax.eval.dists:create",
    "niqe": "adcsr_jax.eval.niqe:create",
    "musiq": "adcsr_jax.eval.musiq:create",
    "maniqa": "adcsr_jax.eval.maniqa:create",
    "clipiqa": "adcsr_jax.eval.clipiqa:create",
}

# The paper's table order (Table C.2); FID is computed per folder, not per image.
PAPER_METRICS: tuple[str, ...] = (
    "psnr",
    "ssim",
    "lpips",
    "dists",
    "fid",
    "niqe",
    "musiq",
    "maniqa",
    "clipiqa",
)


@runtime_checkable
class Metric(Protocol):
    """Per-image image-quality metric on float32 NHWC RGB batches in [0, 1]."""

    name: str
    higher_is_better: bool
    needs_reference: bool

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None = None) -> np.ndarray: ...


def check_batch(
    name: str, sr: Any, hr: Any | None, needs_reference: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate and convert a metric's inputs to float32 NHWC arrays with 3 channels.

    Raises ``ValueError`` naming the metric and the offending shape.
    """
    sr = np.asarray(sr, dtype=np.float32)
    if sr.ndim != 4 or sr.shape[-1] != 3:
        raise ValueError(f"{name}: sr must be an NHWC RGB batch (N, H, W, 3), got shape {sr.shape}")
    if hr is None:
        if needs_reference:
            raise ValueError(
                f"{name} is a full-reference metric: it needs HR images of shape {sr.shape}"
            )
        return sr, None
    hr = np.asarray(hr, dtype=np.float32)
    if hr.shape != sr.shape:
        raise ValueError(
            f"{name}: sr and hr must have the same shape, got {sr.shape} and {hr.shape}"
        )
    return sr, hr


def batched_scores(
    fn: Callable[..., Any], params: Any, images: np.ndarray, batch_size: int, *extra: Any
) -> np.ndarray:
    """``fn(params, batch, *extra)`` over ``images`` in chunks of ``batch_size``, as float64."""
    out = [
        np.asarray(fn(params, jnp.asarray(images[i : i + batch_size]), *extra))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float64)


class LearnedNoReference:
    """Base of the learned no-reference metrics (MUSIQ, MANIQA, CLIP-IQA): higher is better.

    Subclasses set ``name`` and call ``super().__init__(params, batch_size, fn, *extra)`` with a
    jitted ``fn(params, batch, *extra) -> (N,)``; a call scores ``sr`` ``batch_size`` at a time.
    """

    name = ""
    higher_is_better = True
    needs_reference = False

    def __init__(self, params: Any, batch_size: int, fn: Callable[..., Any], *extra: Any) -> None:
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.batch_size = batch_size
        self._fn = fn
        self._extra = extra

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None = None) -> np.ndarray:
        sr, _ = check_batch(self.name, sr, None, self.needs_reference)
        return batched_scores(self._fn, self.params, sr, self.batch_size, *self._extra)


def available_metrics() -> list[str]:
    """Names ``get_metric`` knows (whether or not their weights are present)."""
    return list(REGISTRY)


def get_metric(name: str, weights_dir: str | Path | None = None, **opts: Any) -> Metric:
    """Build the metric called ``name`` (see ``REGISTRY``).

    ``weights_dir`` is the metric-weight cache prepared by ``adcsr convert metrics`` (default
    ``$ADCSR_CACHE`` or ``~/.cache/adcsr_jax``) for the metrics whose weights ship in packages; the
    metrics whose weights ship nowhere take their file from ``opts`` or an environment variable.
    """
    key = name.lower()
    if key not in REGISTRY:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(REGISTRY)} (FID is per folder)")
    module_name, factory = REGISTRY[key].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, factory)(weights_dir=weights_dir, **opts)
