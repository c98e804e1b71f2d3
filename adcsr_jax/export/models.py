"""What gets exported: the student as a pure function of (params, LR in [0, 1]) -> SR in [0, 1].

The exported graph takes an NHWC float32 LR image in [0, 1] (what a phone app has after
decoding) and returns the x4 SR image in [0, 1] after AdcSR's colour fix and clamp, i.e. the
reference inference path end to end. ``colour_fix=False`` drops the colour fix (and its
whole-image statistics) from the graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

SIZES = ("full", "tiny")


@dataclasses.dataclass(frozen=True)
class ExportModel:
    """A network ready for export: ``apply(params, lr01) -> sr01`` and its fp32 params."""

    name: str
    apply: Callable[[Any, jax.Array], jax.Array]
    params: Any
    scale: int
    description: str

    def jax_fn(self) -> Callable[[Any], Any]:
        """Jitted reference ``lr01 -> sr01`` with the params bound."""
        fn = jax.jit(self.apply)
        return lambda x: fn(self.params, jnp.asarray(x, jnp.float32))


def student(
    weights: str | Path | None = None, size: str = "full", seed: int = 0, colour_fix: bool = True
) -> ExportModel:
    """The AdcSR student from a converted folder (``adcsr convert adcsr``), or freshly
    initialised at ``size`` ('full' / 'tiny') when ``weights`` is None."""
    from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, init_student

    if weights is not None:
        from adcsr_jax.weights.adcsr_ckpt import load_student

        module, params, config = load_student(weights, dtype="float32")
        what = f"AdcSR student from {weights}"
    else:
        if size not in SIZES:
            raise ValueError(f"size {size!r}: expected one of {SIZES}")
        config = AdcSRConfig.full() if size == "full" else AdcSRConfig.tiny()
        module, params = init_student(config, seed=seed)
        what = f"AdcSR student ({size}, random init, seed {seed})"
    if not isinstance(module, AdcSR):
        raise TypeError(f"expected an AdcSR module, got {type(module).__name__}")

    def apply(p: Any, lr01: jax.Array) -> jax.Array:
        return module.apply({"params": p}, lr01 * 2.0 - 1.0, fix_colour=colour_fix)

    return ExportModel("student", apply, params, 4, what)


def load(
    model: str = "student",
    weights: str | Path | None = None,
    size: str = "full",
    seed: int = 0,
    colour_fix: bool = True,
) -> ExportModel:
    """Export model by name; only the student is wired (the teacher needs models/osediff.py)."""
    if model == "student":
        return student(weights, size, seed, colour_fix)
    raise ValueError(
        f"model {model!r}: only 'student' can be exported so far (the OSEDiff teacher network, "
        "adcsr_jax/models/osediff.py, is not in this tree yet)"
    )
