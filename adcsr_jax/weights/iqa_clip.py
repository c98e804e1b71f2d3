"""OpenAI CLIP (ModifiedResNet, e.g. ``RN50.pt``) state dict -> Flax params of ``adcsr_jax.models.clip``.

``RN50.pt`` is a TorchScript archive; ``read_torch_file`` loads it with ``torch.jit.load`` on the
CPU and takes its ``state_dict()`` (fp16 values, cast to fp32 exactly as pyiqa's ``model.float()``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from adcsr_jax.weights.errors import CheckpointMismatchError
from adcsr_jax.weights.iqa_common import read_torch_file, torch_to_flax
from adcsr_jax.weights.loaders import check_params

_META_KEYS = ("input_resolution", "context_length", "vocab_size")


def _rename(key: str) -> str:
    key = re.sub(
        r"^transformer\.resblocks\.(\d+)\.mlp\.(c_fc|c_proj)\.", r"text.resblocks.\1.mlp_\2.", key
    )
    key = re.sub(r"^transformer\.", "text.", key)
    if key == "token_embedding.weight":
        return "text.token_embedding"
    if key in ("positional_embedding", "text_projection") or key.startswith("ln_final."):
        return "text." + key
    return key


def clip_params_from_torch(
    state_dict: Mapping[str, np.ndarray], source: str = "<state dict>"
) -> tuple[dict[str, Any], Any]:
    """Convert a CLIP ModifiedResNet state dict; returns (params, CLIPConfig read off the shapes)."""
    from adcsr_jax.models.clip import CLIPConfig, init_params

    sd = {k: v for k, v in state_dict.items() if k not in _META_KEYS}
    if "visual.proj" in sd or "visual.layer1.0.conv1.weight" not in sd:
        raise CheckpointMismatchError(
            source,
            "CLIP ModifiedResNet",
            hint="not an RN50-style CLIP checkpoint; CLIP-IQA uses RN50",
        )
    try:
        cfg = CLIPConfig.from_state_dict_shapes({k: tuple(np.shape(v)) for k, v in sd.items()})
    except KeyError as err:
        raise CheckpointMismatchError(source, "CLIP ModifiedResNet", missing=[str(err)]) from err
    params = torch_to_flax({_rename(k): v for k, v in sd.items()})
    expected = jax.eval_shape(lambda: init_params(cfg))
    check_params(params, expected, source, "CLIP ModifiedResNet")
    return params, cfg


def load_clip_params(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Any]:
    """Read ``RN50.pt`` (TorchScript or plain state dict) and convert it."""
    return clip_params_from_torch(read_torch_file(path), str(path))
