"""pyiqa MANIQA checkpoint (``MANIQA_PIPAL-ae6d356b.pth``) -> Flax params of ``adcsr_jax.models.maniqa``.

The checkpoint holds the whole pyiqa module: ``vit.*`` (timm ViT-B/8) and the MANIQA head at top
level. Dropped because the metric never runs them: ViT blocks after the last feature block, the
ViT's final norm / head, and the Swin stages' unused ``downsample`` conv.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from adcsr_jax.weights.iqa_common import read_torch_file, torch_to_flax
from adcsr_jax.weights.loaders import check_params


def unused_prefixes(cfg: Any) -> tuple[str, ...]:
    """Checkpoint key prefixes the MANIQA forward never reads."""
    late = tuple(f"vit.blocks.{i}." for i in range(cfg.vit_depth, 64))
    return (
        *late,
        "vit.norm.",
        "vit.fc_norm.",
        "vit.head.",
        "vit.head_drop.",
        "swintransformer1.downsample.",
        "swintransformer2.downsample.",
    )


def maniqa_params_from_torch(
    state_dict: Mapping[str, np.ndarray], cfg: Any, source: str = "<state dict>"
) -> dict[str, Any]:
    """Convert a pyiqa ``MANIQA`` state dict; raises ``CheckpointMismatchError`` on any mismatch."""
    from adcsr_jax.models.maniqa import init_params

    tree = torch_to_flax(state_dict, ignore_prefixes=unused_prefixes(cfg))
    params = {"vit": tree.pop("vit", {}), "head": tree}
    expected = jax.eval_shape(lambda: init_params(cfg))
    check_params(params, expected, source, "MANIQA")
    return params


def load_maniqa_params(path: str | os.PathLike[str], cfg: Any) -> dict[str, Any]:
    """Read ``path`` (torch file) and convert it for ``cfg``."""
    return maniqa_params_from_torch(read_torch_file(path), cfg, str(path))
