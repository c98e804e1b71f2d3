"""AdcSR's released files -> the student's Flax params, and our converted student folder.

* ``net_params_200.pkl``: the DDP ``state_dict`` of ``Net``: ``module.body.1.*`` is the pruned
  UNet (diffusers names), ``module.body.2.*`` the trainable decoder mid block. The UNet is also
  stored a second time under ``module.body.1.body.K.*`` (AdcSR registers its blocks in an extra
  ``nn.Sequential``); those copies are checked for equality and dropped.
* ``halfDecoder.ckpt``: entries of ``state_dict`` whose name contains ``decoder`` with
  ``decoder.`` removed are a diffusers ``Decoder`` (widths 64/128/256/256); the student uses its
  up blocks, ``conv_norm_out`` and ``conv_out`` as the frozen tail.

The student's torch naming is ``unet.*``, ``mid_block.*``, ``decoder.*`` (the tail), which the
generic name mapping turns into the params of :class:`adcsr_jax.models.adcsr.AdcSR`.
A converted folder holds ``adcsr_jax.json`` (kind ``adcsr``) and ``params.safetensors``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, abstract_params
from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
from adcsr_jax.weights.half_decoder import read_half_decoder_state_dict
from adcsr_jax.weights.io import read_safetensors, read_state_dict
from adcsr_jax.weights.loaders import (
    CONVERTED_CONFIG,
    CONVERTED_PARAMS,
    FORMAT,
    check_params,
    write_converted,
)
from adcsr_jax.weights.mapping import params_from_torch

KIND = "adcsr"
_DUPLICATE = re.compile(r"^body\.1\.body\.(\d+)\.(.*)$")
_UNET_BODY = {**{k: f"down_blocks.{k}." for k in range(4)}, 4: "mid_block.",
              **{k: f"up_blocks.{k - 5}." for k in range(5, 9)}, 9: "conv_norm_out.",
              11: "conv_out."}  # fmt: skip


def student_params_from_torch(
    state_dict: Mapping[str, np.ndarray], config: AdcSRConfig, *, source: str = "state dict"
) -> dict[str, Any]:
    """Student params (fp32 numpy) from ``unet.*`` / ``mid_block.*`` / ``decoder.*`` torch names."""
    return params_from_torch(state_dict, abstract_params(config), source=source, target="AdcSR")


def read_net_params(
    path: str | Path, *, allow_unsafe_pickle: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(pruned UNet, decoder mid block) state dicts from ``net_params_*.pkl``.

    Accepts keys with or without DDP's ``module.`` prefix. Raises
    :class:`CheckpointMismatchError` for keys outside ``body.1``/``body.2`` or duplicates that
    disagree with the primary copy.
    """
    raw = read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
    sd = {k.removeprefix("module."): v for k, v in raw.items()}
    unet, mid, duplicates, unexpected = {}, {}, {}, []
    for key, value in sd.items():
        if m := _DUPLICATE.match(key):
            duplicates[(int(m.group(1)), m.group(2))] = value
        elif key.startswith("body.1."):
            unet[key[len("body.1.") :]] = value
        elif key.startswith("body.2."):
            mid[key[len("body.2.") :]] = value
        else:
            unexpected.append(key)
    mismatched = []
    for (index, rest), value in duplicates.items():
        prefix = _UNET_BODY.get(index)
        primary = unet.get(f"{prefix}{rest}") if prefix else None
        if primary is None:
            unexpected.append(f"body.1.body.{index}.{rest}")
        elif primary.shape != value.shape or not np.array_equal(primary, value):
            mismatched.append((f"body.1.body.{index}.{rest}", value.shape, primary.shape))
    if unexpected or mismatched or not unet or not mid:
        missing = [
            p for p, d in (("body.1.* (UNet)", unet), ("body.2.* (mid block)", mid)) if not d
        ]
        raise CheckpointMismatchError(
            str(path), "AdcSR Net (net_params)", missing, sorted(unexpected), mismatched,
            "duplicates under body.1.body.K must equal the primary UNet keys" if mismatched else "",
        )  # fmt: skip
    return unet, mid


def read_half_decoder(
    path: str | Path, *, allow_unsafe_pickle: bool = False
) -> dict[str, np.ndarray]:
    """Diffusers ``Decoder`` state dict from ``halfDecoder.ckpt``: AdcSR's layout (names
    containing ``decoder``, with ``decoder.`` removed) or latent-diffusion's
    (``decoder.up.N.block.M...``), see :mod:`adcsr_jax.weights.half_decoder`."""
    return read_half_decoder_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)


def official_state_dict(
    unet: Mapping[str, np.ndarray],
    mid_block: Mapping[str, np.ndarray],
    half_decoder: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The student's torch-named state dict from the released parts (half decoder: tail only)."""
    out = {f"unet.{k}": v for k, v in unet.items()}
    out.update({f"mid_block.{k}": v for k, v in mid_block.items()})
    out.update(
        {
            f"decoder.{k}": v
            for k, v in half_decoder.items()
            if k.startswith(("up_blocks.", "conv_norm_out.", "conv_out."))
        }
    )
    return out


def config_from_state_dict(state_dict: Mapping[str, np.ndarray]) -> AdcSRConfig:
    """The known :class:`AdcSRConfig` (``full`` or ``tiny``) whose widths fit a student state dict.

    Widths can be read from the tensors, but the number of attention heads cannot; for other
    widths pass a config explicitly.
    """
    widths = []
    for key in [f"unet.down_blocks.{i}.resnets.0.conv1.weight" for i in range(4)] + [
        f"decoder.up_blocks.{i}.resnets.0.conv1.weight" for i in range(4)
    ]:
        if key not in state_dict:
            raise CheckpointMismatchError("state dict", "AdcSR", [key])
        widths.append(int(np.shape(state_dict[key])[0]))
    unet, dec = tuple(widths[:4]), tuple(reversed(widths[4:]))
    for config in (AdcSRConfig.full(), AdcSRConfig.tiny()):
        if config.block_out_channels == unet and config.decoder_block_out_channels == dec:
            return config
    raise ValueError(
        f"UNet widths {unet} / decoder widths {dec} match no known AdcSR config; pass an "
        "AdcSRConfig (the number of attention heads is not stored in the weights)"
    )


def convert_official(
    net_params: str | Path,
    half_decoder: str | Path,
    config: AdcSRConfig | None = None,
    *,
    allow_unsafe_pickle: bool = False,
) -> tuple[AdcSRConfig, dict[str, Any]]:
    """``(config, fp32 numpy params)`` of the student from the two released files."""
    unet, mid = read_net_params(net_params, allow_unsafe_pickle=allow_unsafe_pickle)
    dec = read_half_decoder(half_decoder, allow_unsafe_pickle=allow_unsafe_pickle)
    sd = official_state_dict(unet, mid, dec)
    config = config or config_from_state_dict(sd)
    source = f"{net_params} + {half_decoder}"
    return config, student_params_from_torch(sd, config, source=source)


def save_student(directory: str | Path, config: AdcSRConfig, params: Any) -> Path:
    """Write a converted student folder (fp32 safetensors + JSON config, kind ``adcsr``)."""
    return write_converted(directory, KIND, config, params)


def read_converted_meta(directory: str | Path, kind: str) -> dict[str, Any]:
    """The JSON of a converted folder, checked for our format and ``kind``."""
    path = Path(directory) / CONVERTED_CONFIG
    if not path.is_file():
        raise CheckpointReadError(f"{directory}: no {CONVERTED_CONFIG} (not a converted folder)")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointReadError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointReadError(f"{path}: not an {FORMAT} folder")
    if meta.get("kind") != kind:
        raise CheckpointReadError(f"{directory}: holds a {meta.get('kind')!r}, expected {kind!r}")
    return meta


def read_converted_params(directory: str | Path) -> dict[str, Any]:
    """Nested numpy params of a converted folder."""
    tensors, _ = read_safetensors(Path(directory) / CONVERTED_PARAMS)
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in tensors.items()})


def load_student(
    directory: str | Path, dtype: Any | None = None
) -> tuple[AdcSR, dict[str, Any], AdcSRConfig]:
    """``(module, params on device, config)`` from a :func:`save_student` folder.

    ``dtype`` overrides the compute dtype (params stay fp32).
    """
    meta = read_converted_meta(directory, KIND)
    config = AdcSRConfig.from_dict(meta["config"])
    if dtype is not None:
        config = config.replace(dtype=jnp.dtype(dtype).name)
    params = read_converted_params(directory)
    check_params(params, abstract_params(config), str(Path(directory) / CONVERTED_PARAMS), KIND)
    return AdcSR(config), jax.tree.map(jnp.asarray, params), config
