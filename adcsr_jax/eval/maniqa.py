"""MANIQA (Yang et al., CVPRW 2022, PIPAL) as a metric, as pyiqa ``maniqa-pipal`` computes it.

The network is ``adcsr_jax.models.maniqa``; its checkpoint ``MANIQA_PIPAL-ae6d356b.pth`` (which
also holds the ViT weights) ships nowhere: pass its path (``weights_path=``, ``--maniqa-weights``
or ``$ADCSR_MANIQA_WEIGHTS``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax

from adcsr_jax.eval.base import LearnedNoReference
from adcsr_jax.models.maniqa import MANIQAConfig, maniqa_scores
from adcsr_jax.weights.errors import resolve_weight_file

ENV_VAR = "ADCSR_MANIQA_WEIGHTS"
FILENAME = "MANIQA_PIPAL-ae6d356b.pth"
WHERE = (
    "pyiqa's weight store (Hugging Face chaofengc/IQA-PyTorch-Weights, or the IQA-PyTorch GitHub "
    "release v0.1-weights)"
)


class MANIQA(LearnedNoReference):
    """MANIQA metric object (``adcsr_jax.eval.base.Metric``): higher is better, no reference.

    ``batch_size``: images per device call (each brings 20 ViT-B/8 crops at 785 tokens);
    ``crop_chunk``: crops run at once inside a call (sequential chunks; 5 keeps CPU memory near
    2 GB, None runs all crops together, fastest on an accelerator).
    """

    name = "maniqa"

    def __init__(
        self,
        params: Any,
        cfg: MANIQAConfig = MANIQAConfig(),
        batch_size: int = 1,
        crop_chunk: int | None = 5,
    ) -> None:
        self.cfg = cfg
        fn = jax.jit(partial(maniqa_scores, cfg=cfg, crop_chunk=crop_chunk))
        super().__init__(params, batch_size, fn)


def create(
    weights_path: str | None = None,
    weights_dir: str | None = None,
    batch_size: int = 1,
    crop_chunk: int | None = 5,
    **opts: Any,
) -> MANIQA:
    """Build the PIPAL MANIQA metric from ``MANIQA_PIPAL-ae6d356b.pth`` (see module doc)."""
    from adcsr_jax.weights.iqa_maniqa import load_maniqa_params

    cfg = MANIQAConfig(**opts)
    path = resolve_weight_file("MANIQA", weights_path, ENV_VAR, FILENAME, WHERE, weights_dir)
    return MANIQA(load_maniqa_params(path, cfg), cfg, batch_size, crop_chunk)
