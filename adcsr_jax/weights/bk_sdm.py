"""BK-SDM-v2-Small's block-removed UNet from SD 2.1-base weights, as BK-SDM initialises it.

BK-SDM (Kim et al., "BK-SDM: A Lightweight, Fast, and Cheap Version of Stable Diffusion",
ECCV 2024; github.com/Nota-NetsPresso/BK-SDM): ``src/unet_config_v2-base/bk_small/config.json`` is
SD 2.1-base's ``UNet2DConditionModel`` config with ``layers_per_block: 1`` and
``mid_block_type: null``. So against SD:

* every down stage keeps ``resnets.0`` (+ ``attentions.0``) and loses ``resnets.1``
  (+ ``attentions.1``); downsamplers stay;
* the mid block is removed;
* every up stage keeps two of its three (resnet, attention) pairs.

``kd_train_text_to_image.py: copy_weight_from_teacher`` (``bk_small``) fills the student by name
except in the up stages, where student layer 1 takes the teacher's layer **2**
(``up_blocks.i.resnets.1.`` <- ``up_blocks.i.resnets.2.``, same for ``attentions``): the
teacher's middle up layer is the one removed. Shapes agree: student up layer 1 reads the same
skip (the down stage's downsampler output, or conv_in's) as teacher layer 2 did.

:func:`bk_small_state_dict` does exactly that on a diffusers-named SD UNet state dict. The AdcSR
ablation (Table B.1 row 1) then applies the student front to it (``prune.prune_unet_state_dict``
at ratio 1.0: no channel pruning, conv_in tiled to 12 inputs, conv_out tiled to the half
decoder's 256, time embedding and cross-attention removed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

_DOWN_REMOVED = re.compile(r"^down_blocks\.\d+\.(resnets|attentions)\.1\.")
_UP_LAYER = re.compile(r"^(up_blocks\.\d+\.(?:resnets|attentions))\.(\d+)\.(.*)$")
# student up layer index <- teacher up layer index (BK-SDM copy_weight_from_teacher, bk_small)
UP_SOURCE = {0: 0, 1: 2}


def bk_small_state_dict(sd_unet: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """SD UNet (``layers_per_block=2``, diffusers names) -> BK-SDM-Small UNet state dict."""
    if "up_blocks.0.resnets.2.conv1.weight" not in sd_unet:
        raise KeyError(
            "SD UNet state dict lacks up_blocks.0.resnets.2.conv1.weight: BK-SDM-Small removes "
            "blocks from a UNet with layers_per_block=2 (SD 1.x / 2.x)"
        )
    out: dict[str, np.ndarray] = {}
    for key, value in sd_unet.items():
        if key.startswith("mid_block.") or _DOWN_REMOVED.match(key):
            continue
        m = _UP_LAYER.match(key)
        if m is not None:
            index = int(m.group(2))
            student = {v: k for k, v in UP_SOURCE.items()}.get(index)
            if student is None:
                continue  # the teacher's middle up layer: removed
            key = f"{m.group(1)}.{student}.{m.group(3)}"
        out[key] = np.asarray(value)
    return out


def bk_small_sources(student_keys: list[str]) -> dict[str, str]:
    """Student key -> the SD key it is copied from (for tests and logs)."""
    out = {}
    for key in student_keys:
        m = _UP_LAYER.match(key)
        if m is None:
            out[key] = key
        else:
            out[key] = f"{m.group(1)}.{UP_SOURCE[int(m.group(2))]}.{m.group(3)}"
    return out
