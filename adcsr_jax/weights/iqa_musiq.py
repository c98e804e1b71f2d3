"""pyiqa MUSIQ checkpoint (``musiq_*_ckpt-*.pth``) -> Flax params of ``adcsr_jax.models.musiq``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from adcsr_jax.weights.iqa_common import read_torch_file, torch_to_flax
from adcsr_jax.weights.loaders import check_params


def musiq_params_from_torch(
    state_dict: Mapping[str, np.ndarray], cfg: Any, source: str = "<state dict>"
) -> dict[str, Any]:
    """Convert a pyiqa ``MUSIQ`` state dict; raises ``CheckpointMismatchError`` on any mismatch."""
    from adcsr_jax.models.musiq import init_params

    params = torch_to_flax(state_dict)
    expected = jax.eval_shape(lambda: init_params(cfg))
    check_params(params, expected, source, "MUSIQ")
    return params


def load_musiq_params(path: str | os.PathLike[str], cfg: Any) -> dict[str, Any]:
    """Read ``path`` (torch file) and convert it for ``cfg``."""
    return musiq_params_from_torch(read_torch_file(path), cfg, str(path))
