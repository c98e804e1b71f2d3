"""The ``adcsr`` degradation preset cut to one resize bucket and Gaussian noise: the pipeline's
logic at a fraction of the compile time, for tests (and the multi-host test's worker)."""

from __future__ import annotations

from typing import Any

from adcsr_jax.data import degradations

CHEAP = {
    "resize_prob": (0.0, 0.0, 1.0),
    "resize_prob2": (0.0, 0.0, 1.0),
    "gaussian_noise_prob": 1.0,
    "gaussian_noise_prob2": 1.0,
}


def cheap_preset(**overrides: Any) -> degradations.DegradationConfig:
    """``get_preset("adcsr")`` with :data:`CHEAP` and then ``overrides`` applied."""
    return degradations.get_preset("adcsr", **{**CHEAP, **overrides})
