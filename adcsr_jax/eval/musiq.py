"""MUSIQ (Ke et al., ICCV 2021, KonIQ) as a metric, as pyiqa 0.1.13/0.1.16 computes it.

The network is ``adcsr_jax.models.musiq``; its checkpoint ``musiq_koniq_ckpt-e95806b9.pth`` ships
nowhere: pass its path (``weights_path=``, ``--musiq-weights`` or ``$ADCSR_MUSIQ_WEIGHTS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax

from adcsr_jax.eval.base import LearnedNoReference
from adcsr_jax.models.musiq import MUSIQConfig, musiq_scores
from adcsr_jax.weights.errors import resolve_weight_file

ENV_VAR = "ADCSR_MUSIQ_WEIGHTS"
FILENAME = "musiq_koniq_ckpt-e95806b9.pth"
WHERE = (
    "pyiqa's weight store (Hugging Face chaofengc/IQA-PyTorch-Weights, or the IQA-PyTorch GitHub "
    "release v0.1-weights)"
)


class MUSIQ(LearnedNoReference):
    """MUSIQ metric object (``adcsr_jax.eval.base.Metric``): higher is better, no reference."""

    name = "musiq"

    def __init__(self, params: Any, cfg: MUSIQConfig = MUSIQConfig(), batch_size: int = 8) -> None:
        self.cfg = cfg
        super().__init__(params, batch_size, jax.jit(partial(musiq_scores, cfg=cfg)))


def create(
    weights_path: str | None = None,
    weights_dir: str | None = None,
    batch_size: int = 8,
    **opts: Sequence[int] | int,
) -> MUSIQ:
    """Build the KonIQ MUSIQ metric from ``musiq_koniq_ckpt-e95806b9.pth`` (see module doc)."""
    from adcsr_jax.weights.iqa_musiq import load_musiq_params

    cfg = MUSIQConfig(**opts)  # type: ignore[arg-type]
    path = resolve_weight_file("MUSIQ", weights_path, ENV_VAR, FILENAME, WHERE, weights_dir)
    return MUSIQ(load_musiq_params(path, cfg), cfg, batch_size)
