"""What gets exported: the student as a pure function of (params, LR in [0, 1]) -> SR in [0, 1].

The exported graph takes an NHWC float32 LR image in [0, 1] (what a phone app has after
decoding) and returns the x4 SR image in [0, 1] after AdcSR's colour fix and clamp, i.e. the
reference inference path end to end. The colour fix can instead run on the host
(``colour_fix='host'``, the default for W8A16): its per-image statistics (the SR's std over
512 x 512 pixels) span a wide range from image to image, which a per-tensor int16 scale fixed at
calibration cannot follow (a flat image's variance rounds to a few steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SIZES = ("full", "tiny")


COLOUR_FIX = ("graph", "host", "none")


def _identity(out: np.ndarray, lr01: np.ndarray) -> np.ndarray:
    return out


def host_colour_fix(raw: np.ndarray, lr01: np.ndarray) -> np.ndarray:
    """AdcSR's colour fix and clamp on the host: raw network output (B, 4H, 4W, 3) in about
    [-1, 1] and the LR input in [0, 1] -> SR in [0, 1]. Per image and channel, the SR gets the
    LR's mean and unbiased std (in [-1, 1] space), as ``adcsr_jax.models.adcsr.finish``."""
    sr = np.asarray(raw, np.float64)
    lr = np.asarray(lr01, np.float64) * 2.0 - 1.0
    mean_sr, std_sr = sr.mean((1, 2), keepdims=True), sr.std((1, 2), ddof=1, keepdims=True)
    mean_lr, std_lr = lr.mean((1, 2), keepdims=True), lr.std((1, 2), ddof=1, keepdims=True)
    out = (sr - mean_sr) / std_sr * std_lr + mean_lr
    return np.clip(out / 2.0 + 0.5, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ExportModel:
    """A network ready for export.

    ``apply(params, lr01)`` is the exported graph; ``postprocess(out, lr01)`` the host-side step
    after it (identity, or the colour fix when it runs on the host); ``reference(params, lr01)``
    the full JAX path that ``postprocess(graph(lr))`` must reproduce (SR in [0, 1]).
    """

    name: str
    apply: Callable[[Any, jax.Array], jax.Array]
    params: Any
    scale: int
    description: str
    reference: Callable[[Any, jax.Array], jax.Array] | None = None
    postprocess: Callable[[np.ndarray, np.ndarray], np.ndarray] = _identity
    raw_apply: Callable[[Any, jax.Array], jax.Array] | None = None  # graph without colour fix

    def jax_fn(self) -> Callable[[Any], Any]:
        """Jitted reference ``lr01 -> sr01`` with the params bound."""
        fn = jax.jit(self.reference or self.apply)
        return lambda x: fn(self.params, jnp.asarray(x, jnp.float32))


def student(
    weights: str | Path | None = None,
    size: str = "full",
    seed: int = 0,
    colour_fix: str = "graph",
    config: Any = None,
) -> ExportModel:
    """The AdcSR student from a converted folder (``adcsr convert adcsr``), or freshly
    initialised at ``size`` ('full' / 'tiny') when ``weights`` is None; ``config`` (an
    ``AdcSRConfig``) instead of ``size``: any other architecture, freshly initialised.

    ``colour_fix``: 'graph' (colour fix and clamp inside the exported graph), 'host' (the graph
    returns the raw network output; :func:`host_colour_fix` finishes on the host: whole-image
    statistics quantise badly at int16, see the module docstring) or 'none' (no colour fix).
    """
    if colour_fix not in COLOUR_FIX:
        raise ValueError(f"colour_fix {colour_fix!r}: expected one of {COLOUR_FIX}")
    from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, init_student

    if weights is not None:
        from adcsr_jax.weights.adcsr_ckpt import load_student

        module, params, config = load_student(weights, dtype="float32")
        what = f"AdcSR student from {weights}"
    else:
        if config is None and size not in SIZES:
            raise ValueError(f"size {size!r}: expected one of {SIZES}")
        if config is None:
            config = AdcSRConfig.full() if size == "full" else AdcSRConfig.tiny()
        else:
            size = "custom"
        module, params = init_student(config, seed=seed)
        what = f"AdcSR student ({size}, random init, seed {seed})"
    if not isinstance(module, AdcSR):
        raise TypeError(f"expected an AdcSR module, got {type(module).__name__}")

    def full(p: Any, lr01: jax.Array) -> jax.Array:
        return module.apply({"params": p}, lr01 * 2.0 - 1.0, fix_colour=colour_fix != "none")

    def raw(p: Any, lr01: jax.Array) -> jax.Array:
        return module.apply({"params": p}, lr01 * 2.0 - 1.0, method=AdcSR.raw)

    if colour_fix == "host":
        return ExportModel("student", raw, params, 4, what, full, host_colour_fix, raw)
    return ExportModel("student", full, params, 4, what, full, raw_apply=raw)


def for_precision(model: ExportModel, precision: str, colour_fix: str = "auto") -> ExportModel:
    """The variant to export at ``precision``: with ``colour_fix='auto'``, W8A16 moves the colour
    fix to the host (when the model has one) and other precisions keep ``model`` as it is."""
    mode = ("host" if precision == "w8a16" else "keep") if colour_fix == "auto" else colour_fix
    if mode == "host" and model.raw_apply is not None and model.postprocess is _identity:
        return dataclasses.replace(model, apply=model.raw_apply, postprocess=host_colour_fix)
    return model


def teacher(weights: str | Path | None = None, size: str = "full", seed: int = 0) -> ExportModel:
    """The OSEDiff teacher (bicubic x4 -> VAE encoder -> UNet at t=999 -> VAE decoder), with a
    fixed all-zero text embedding baked in (prompt extraction is not part of the export), from
    a converted folder or freshly initialised. Output: SR in [0, 1] (no colour fix)."""
    from adcsr_jax.models.adcsr import random_params
    from adcsr_jax.models.osediff import OSEDiff, OSEDiffConfig, abstract_params

    if weights is not None:
        from adcsr_jax.weights.osediff_ckpt import load_teacher

        module, params, config = load_teacher(weights, dtype="float32")
        what = f"OSEDiff teacher from {weights}"
    else:
        if size not in SIZES:
            raise ValueError(f"size {size!r}: expected one of {SIZES}")
        config = (
            OSEDiffConfig.full(half_decoder=False)
            if size == "full"
            else OSEDiffConfig.tiny(half_decoder=False)
        )
        module = OSEDiff(config)
        params = random_params(abstract_params(config), seed)
        what = f"OSEDiff teacher ({size}, random init, seed {seed})"
    width = config.unet.cross_attention_dim or 1

    def apply(p: Any, lr01: jax.Array) -> jax.Array:
        text = jnp.zeros((lr01.shape[0], 77, width), jnp.float32)
        sr = module.apply({"params": p}, lr01 * 2.0 - 1.0, text)
        return jnp.clip(sr / 2.0 + 0.5, 0.0, 1.0)

    return ExportModel("teacher", apply, params, 4, what)


def load(
    model: str = "student",
    weights: str | Path | None = None,
    size: str = "full",
    seed: int = 0,
    colour_fix: str = "graph",
) -> ExportModel:
    """Export model by name: 'student' (AdcSR) or 'teacher' (OSEDiff, for the comparison)."""
    if model == "student":
        return student(weights, size, seed, colour_fix)
    if model == "teacher":
        return teacher(weights, size, seed)
    raise ValueError(f"model {model!r}: expected 'student' or 'teacher'")
