"""TAESD decoder weights: madebyollin/taesd ``taesd_decoder.pth`` and diffusers ``AutoencoderTiny``.

Layouts accepted by :func:`taesd_decoder_params` / :func:`load_taesd_decoder`:

* ``taesd_decoder.pth`` (madebyollin/taesd): the state dict of ``taesd.py: Decoder()``, an
  ``nn.Sequential`` whose entry 0 is the parameter-free ``Clamp``: keys ``1.weight``,
  ``3.conv.0.weight``, ..., ``19.bias``. Entry ``i`` is diffusers' ``layers.{i-1}``.
* diffusers ``AutoencoderTiny`` (``diffusion_pytorch_model.safetensors`` of e.g.
  ``madebyollin/taesd``, or a folder holding it): ``decoder.layers.<i>...``; ``encoder.*`` keys are
  ignored. A bare ``DecoderTiny`` state dict (``layers.<i>...``) works too.

Every other key, a missing key or a wrong shape raises
:class:`~adcsr_jax.weights.errors.CheckpointMismatchError` naming the file and each key.
:func:`write_taesd_decoder` writes diffusers' ``decoder.layers.*`` names (safetensors), what stage 1
exports for the tiny-decoder ablation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from adcsr_jax.models.taesd import TAESDConfig, abstract_taesd_params
from adcsr_jax.weights.errors import CheckpointMismatchError
from adcsr_jax.weights.io import read_state_dict, write_safetensors
from adcsr_jax.weights.mapping import params_from_torch, params_to_torch

TARGET = "TAESD decoder (diffusers DecoderTiny layout)"
EXPORT_NAME = "taesd_decoder.safetensors"
_TAESD_KEY = re.compile(r"^(\d+)\.(.*)$")


def to_diffusers_names(state_dict: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Any accepted layout -> bare ``DecoderTiny`` names (``layers.<i>.…``)."""
    keys = list(state_dict)
    if any(k.startswith("decoder.layers.") for k in keys):
        return {k[len("decoder.") :]: np.asarray(v) for k, v in state_dict.items()
                if k.startswith("decoder.")}  # fmt: skip
    if any(k.startswith("layers.") for k in keys):
        return {k: np.asarray(v) for k, v in state_dict.items()}
    if keys and all(_TAESD_KEY.match(k) for k in keys):
        out = {}
        for k, v in state_dict.items():
            index, rest = _TAESD_KEY.match(k).groups()
            if int(index) == 0:
                raise CheckpointMismatchError(
                    source, TARGET, unexpected=[k],
                    hint="entry 0 of taesd.py's Decoder is the parameter-free Clamp",
                )  # fmt: skip
            out[f"layers.{int(index) - 1}.{rest}"] = np.asarray(v)
        return out
    raise CheckpointMismatchError(
        source,
        TARGET,
        unexpected=sorted(keys)[:10],
        hint="expected taesd_decoder.pth keys ('1.weight', '3.conv.0.weight', ...) or diffusers "
        "AutoencoderTiny keys ('decoder.layers.0.weight', ...)",
    )


def taesd_decoder_params(
    state_dict: Mapping[str, Any], config: TAESDConfig | None = None, *, source: str = "state dict"
) -> dict[str, Any]:
    """Flax params (fp32 numpy) of :class:`~adcsr_jax.models.taesd.TAESDDecoder` from a state dict."""
    config = config or TAESDConfig()
    names = to_diffusers_names(state_dict, source)
    return params_from_torch(names, abstract_taesd_params(config), source=source, target=TARGET)


def load_taesd_decoder(
    path: str | Path, config: TAESDConfig | None = None
) -> tuple[TAESDConfig, dict[str, Any]]:
    """``(config, params)`` from ``taesd_decoder.pth``, an AutoencoderTiny file or folder."""
    config = config or TAESDConfig()
    path = Path(path)
    if path.is_dir() and (path / EXPORT_NAME).is_file():
        path = path / EXPORT_NAME
    return config, taesd_decoder_params(read_state_dict(path), config, source=str(path))


def write_taesd_decoder(path: str | Path, params: Any) -> Path:
    """Write ``decoder.layers.*`` (diffusers ``AutoencoderTiny`` names, torch layouts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"decoder.{k}": v for k, v in params_to_torch(params).items()}
    write_safetensors(path, tensors, {"format": "pt"})
    return path
