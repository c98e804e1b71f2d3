"""The discriminator's state from SD 2.1-base weights, and its trained part in AdcSR's torch names.

AdcSR ``train.py`` trains ``unet_D``'s parameters named ``lora`` or ``conv_in``; in that model
(diffusers UNet after ``add_adapter``) they are called ``conv_in.base_layer.weight``,
``conv_in.lora_A.default_encoder.weight``, ``down_blocks.0.resnets.0.conv1.lora_B.default_encoder
.weight``, ... :func:`save_discriminator` writes exactly those keys (torch layouts, safetensors),
so ``unet_D.load_state_dict(safetensors.torch.load_file(path), strict=False)`` restores a trained
discriminator in PyTorch; the file's metadata holds the :class:`DiscriminatorConfig`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from adcsr_jax.models.discriminator import (
    DiscriminatorConfig,
    abstract_discriminator,
    init_discriminator,
)
from adcsr_jax.models.unet import UNetConfig
from adcsr_jax.weights.errors import CheckpointMismatchError
from adcsr_jax.weights.io import read_safetensors, write_safetensors
from adcsr_jax.weights.loaders import load_unet
from adcsr_jax.weights.lora_peft import lora_from_peft, peft_state_dict
from adcsr_jax.weights.mapping import params_from_torch

CONFIG_KEY = "discriminator_config"


def build_discriminator(
    config: DiscriminatorConfig, sd_unet: str | Path, rng: jax.Array
) -> dict[str, Any]:
    """:func:`init_discriminator` from an SD UNet on disk (any form :func:`load_unet` reads).

    The UNet's architecture must equal ``config.unet`` (the compute dtype aside).
    """
    module, params = load_unet(sd_unet)
    got = dataclasses.replace(module.config, dtype=config.unet.dtype)
    if got != config.unet:
        diff = {k: (v, getattr(config.unet, k)) for k, v in got.to_dict().items()
                if v != getattr(config.unet, k)}  # fmt: skip
        raise ValueError(f"{sd_unet}: UNet config differs from DiscriminatorConfig.unet: {diff}")
    return init_discriminator(config, params, rng)


def discriminator_state_dict(trainable: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The trainable part under ``unet_D``'s names (AdcSR ``train.py``), torch layouts."""
    return peft_state_dict(trainable["unet"], trainable["lora"])


def save_discriminator(
    path: str | Path, config: DiscriminatorConfig, trainable: Mapping[str, Any]
) -> Path:
    """Write the trainable part (see :func:`discriminator_state_dict`) as one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {CONFIG_KEY: json.dumps(_config_dict(config)), "format": "pt"}
    write_safetensors(path, discriminator_state_dict(trainable), meta)
    return path


def _config_dict(config: DiscriminatorConfig) -> dict[str, Any]:
    d = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    d["unet"] = config.unet.to_dict()
    return d


def read_discriminator_config(path: str | Path) -> DiscriminatorConfig:
    """The :class:`DiscriminatorConfig` stored in a :func:`save_discriminator` file."""
    _, meta = read_safetensors(path)
    if CONFIG_KEY not in meta:
        raise CheckpointMismatchError(str(path), "discriminator", hint=f"no {CONFIG_KEY} metadata")
    d = json.loads(meta[CONFIG_KEY])
    return DiscriminatorConfig(**{**d, "unet": UNetConfig.from_dict(d["unet"])})


def load_discriminator(path: str | Path, config: DiscriminatorConfig) -> dict[str, Any]:
    """The ``trainable`` tree from a :func:`save_discriminator` file (or any state dict file of
    ``unet_D`` holding those keys); every missing, unexpected and misshapen key is named."""
    tensors, _ = read_safetensors(path)
    abstract = abstract_discriminator(config)
    template = abstract["trainable"]
    lora_keys = {k for k in tensors if ".lora_" in k}
    base = {k.replace(".base_layer.", "."): v for k, v in tensors.items() if k not in lora_keys}
    unet_template = template["unet"]
    if unet_template:
        unet = params_from_torch(base, unet_template, source=str(path), target="discriminator")
    elif base:
        raise CheckpointMismatchError(str(path), "discriminator", unexpected=sorted(base))
    else:
        unet = {}
    full = traverse_util.unflatten_dict(
        traverse_util.flatten_dict(abstract["frozen"]["unet"])
        | traverse_util.flatten_dict(unet_template)
    )
    lora = {}
    if config.specs:
        lora = lora_from_peft({k: tensors[k] for k in lora_keys}, config.specs, full,
                              source=str(path))  # fmt: skip
    elif lora_keys:
        raise CheckpointMismatchError(str(path), "discriminator", unexpected=sorted(lora_keys))
    return {"unet": unet, "lora": lora}
