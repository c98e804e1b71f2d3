"""OSEDiff's released files -> the teacher's Flax params, and our converted teacher folder.

Two layouts exist (SPEC Part I 2.5):

* OSEDiff's own ``osediff.pkl``: ``{rank_unet, rank_vae, unet_lora_{encoder,decoder,others}_modules,
  vae_lora_encoder_modules, state_dict_unet, state_dict_vae}`` with PEFT names
  (``<module>.lora_A.<adapter>.weight``, ``<module>.lora_B.<adapter>.weight``, and the fully
  trained ``conv_in.base_layer.{weight,bias}``). It is merged into SD 2.1-base as
  ``W + (alpha / r) * B @ A`` with PEFT's default alpha 8, i.e. scaling 2.0 at r = 4.
* AdcSR's ``osediff.pkl``: ``{"vae": state_dict, "unet": state_dict}``, already merged, plain
  diffusers names.

The teacher's torch naming is ``unet.*``, ``vae.*`` and (optionally) ``half_decoder.*`` (conv_in
and mid block of AdcSR's half decoder, for ``f_T``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.models.osediff import OSEDiff, OSEDiffConfig, abstract_params
from adcsr_jax.models.unet import UNetConfig
from adcsr_jax.models.vae import VAEConfig
from adcsr_jax.nn.lora import PEFT_DEFAULT_ALPHA, lora_scaling, merge_lora
from adcsr_jax.weights.adcsr_ckpt import read_converted_meta, read_converted_params
from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
from adcsr_jax.weights.io import read_state_dict, read_torch
from adcsr_jax.weights.loaders import (
    CONVERTED_PARAMS,
    check_params,
    write_converted,
)
from adcsr_jax.weights.mapping import params_from_torch

KIND = "osediff"
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
OSEDIFF_KEYS = ("rank_unet", "rank_vae", "state_dict_unet", "state_dict_vae")


@dataclasses.dataclass
class OSEDiffLoRA:
    """The content of OSEDiff's own ``osediff.pkl``."""

    rank_unet: int
    rank_vae: int
    unet: dict[str, np.ndarray]
    vae: dict[str, np.ndarray]
    unet_modules: list[str]
    vae_modules: list[str]


def read_osediff_lora(
    path: str | Path, *, allow_unsafe_pickle: bool = False, loaded: Any = None
) -> OSEDiffLoRA:
    """Read OSEDiff's ``osediff.pkl`` (PEFT LoRA layout); errors name the file and missing keys.

    ``loaded``: the file's already-unpickled content (to avoid reading a large file twice).
    """
    obj = read_torch(path, allow_unsafe_pickle=allow_unsafe_pickle) if loaded is None else loaded
    if not isinstance(obj, Mapping) or any(k not in obj for k in OSEDIFF_KEYS):
        have = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointReadError(
            f"{path}: not OSEDiff's osediff.pkl (needs keys {list(OSEDIFF_KEYS)}, found {have})"
        )
    modules = [
        m
        for name in (
            "unet_lora_encoder_modules",
            "unet_lora_decoder_modules",
            "unet_lora_others_modules",
        )
        for m in obj.get(name, [])
    ]
    return OSEDiffLoRA(
        rank_unet=int(obj["rank_unet"]),
        rank_vae=int(obj["rank_vae"]),
        unet={k: np.asarray(v) for k, v in obj["state_dict_unet"].items()},
        vae={k: np.asarray(v) for k, v in obj["state_dict_vae"].items()},
        unet_modules=modules,
        vae_modules=list(dict.fromkeys(obj.get("vae_lora_encoder_modules", []))),
    )


def merge_peft_state_dict(
    base: Mapping[str, np.ndarray],
    peft: Mapping[str, np.ndarray],
    rank: int,
    *,
    alpha: float = PEFT_DEFAULT_ALPHA,
    expected_modules: list[str] | None = None,
    source: str = "LoRA state dict",
) -> dict[str, np.ndarray]:
    """Fold PEFT-named LoRA weights (and ``base_layer`` overrides) into a diffusers state dict.

    Every adapter of a module is merged (``W + alpha/rank * B @ A``); ``<m>.base_layer.<p>``
    replaces ``<m>.<p>``. Raises :class:`CheckpointMismatchError` listing unmatched entries,
    missing base weights, rank or shape mismatches, and ``expected_modules`` without LoRA.
    """
    scale = lora_scaling(rank, alpha)
    merged = {k: np.asarray(v, np.float32) for k, v in base.items()}
    pairs: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    unexpected, missing, mismatched = [], [], []
    for key, value in peft.items():
        if m := _LORA.match(key):
            pairs.setdefault((m["module"], m["adapter"]), {})[m["ab"]] = np.asarray(value)
        elif ".base_layer." in key:
            target = key.replace(".base_layer.", ".")
            if target not in merged:
                unexpected.append(key)
            elif merged[target].shape != np.shape(value):
                mismatched.append((key, np.shape(value), merged[target].shape))
            else:
                merged[target] = np.asarray(value, np.float32)
        else:
            unexpected.append(key)
    for (module, adapter), ab in sorted(pairs.items()):
        name = f"{module}.lora_{{}}.{adapter}.weight"
        if set(ab) != {"A", "B"}:
            missing += [name.format(x) for x in "AB" if x not in ab]
            continue
        target = f"{module}.weight"
        if target not in merged:
            unexpected += [name.format("A"), name.format("B")]
            continue
        if ab["A"].shape[0] != rank:
            mismatched.append((name.format("A"), ab["A"].shape, (rank, *ab["A"].shape[1:])))
            continue
        try:
            merged[target] = merge_lora(merged[target], ab["A"], ab["B"], scale)
        except ValueError as e:
            mismatched.append((f"{name.format('B')} ({e})", ab["B"].shape, merged[target].shape))
    if expected_modules:
        have = {module for module, _ in pairs}
        missing += [f"{m}.lora_A.*" for m in expected_modules if m not in have]
    if unexpected or missing or mismatched:
        raise CheckpointMismatchError(source, "LoRA merge", missing, unexpected, mismatched)
    return merged


def read_sd21(folder: str | Path) -> tuple[UNetConfig, dict, VAEConfig, dict]:
    """``(unet config, unet state dict, vae config, vae state dict)`` of a diffusers SD folder."""
    folder = Path(folder)
    out: list[Any] = []
    for sub, cls, class_name in (("unet", UNetConfig, "UNet2DConditionModel"),
                                 ("vae", VAEConfig, "AutoencoderKL")):  # fmt: skip
        path = folder / sub
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointReadError(f"{folder}: no {sub}/config.json (need the diffusers layout)")
        raw = json.loads(cfg_file.read_text())
        if raw.get("_class_name", class_name) != class_name:
            raise CheckpointReadError(
                f"{cfg_file}: _class_name {raw['_class_name']!r}, expected {class_name!r}"
            )
        out += [cls.from_diffusers(raw), read_state_dict(path)]
    return tuple(out)  # type: ignore[return-value]


def read_merged_osediff(
    path: str | Path, *, allow_unsafe_pickle: bool = False, loaded: Any = None
) -> tuple[dict, dict]:
    """``(unet, vae)`` state dicts of AdcSR's merged ``{"vae", "unet"}`` ``osediff.pkl``."""
    obj = read_torch(path, allow_unsafe_pickle=allow_unsafe_pickle) if loaded is None else loaded
    if not isinstance(obj, Mapping) or not {"vae", "unet"} <= set(obj):
        have = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointReadError(
            f"{path}: not AdcSR's merged osediff.pkl (needs 'vae' and 'unet', found {have})"
        )
    return (
        {k: np.asarray(v) for k, v in obj["unet"].items()},
        {k: np.asarray(v) for k, v in obj["vae"].items()},
    )


def teacher_state_dict(
    unet: Mapping[str, np.ndarray],
    vae: Mapping[str, np.ndarray],
    half_decoder: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The teacher's torch naming (half decoder: ``conv_in`` and ``mid_block`` only)."""
    out = {f"unet.{k}": v for k, v in unet.items()}
    out.update({f"vae.{k}": v for k, v in vae.items()})
    if half_decoder is not None:
        out.update(
            {
                f"half_decoder.{k}": v
                for k, v in half_decoder.items()
                if k.startswith(("conv_in.", "mid_block."))
            }  # fmt: skip
        )
    return out


def teacher_params_from_torch(
    state_dict: Mapping[str, np.ndarray], config: OSEDiffConfig, *, source: str = "state dict"
) -> dict[str, Any]:
    """Teacher params (fp32 numpy) from ``unet.*`` / ``vae.*`` / ``half_decoder.*`` names."""
    return params_from_torch(state_dict, abstract_params(config), source=source, target="OSEDiff")


def convert_osediff(
    lora_file: str | Path,
    sd21: str | Path | None = None,
    half_decoder: str | Path | None = None,
    *,
    alpha: float = PEFT_DEFAULT_ALPHA,
    allow_unsafe_pickle: bool = False,
) -> tuple[OSEDiffConfig, dict[str, Any]]:
    """``(config, fp32 numpy params)`` of the teacher from either ``osediff.pkl`` layout.

    OSEDiff's LoRA file needs ``sd21`` (the diffusers SD 2.1-base folder); AdcSR's merged file
    takes its configs from ``sd21`` if given, else SD 2.1-base's. ``half_decoder`` (AdcSR's
    ``halfDecoder.ckpt``) adds the ``f_T`` stem.
    """
    from adcsr_jax.weights.adcsr_ckpt import read_half_decoder

    obj = read_torch(lora_file, allow_unsafe_pickle=allow_unsafe_pickle)
    if isinstance(obj, Mapping) and {"vae", "unet"} <= set(obj):
        unet_sd, vae_sd = read_merged_osediff(lora_file, loaded=obj)
        del obj
        if sd21 is not None:
            unet_cfg, _, vae_cfg, _ = read_sd21(sd21)
        else:
            unet_cfg, vae_cfg = UNetConfig(), VAEConfig()
    else:
        lora = read_osediff_lora(lora_file, loaded=obj)
        del obj
        if sd21 is None:
            raise ValueError(f"{lora_file} holds LoRA weights only: pass the SD 2.1-base folder")
        unet_cfg, unet_base, vae_cfg, vae_base = read_sd21(sd21)
        unet_sd = merge_peft_state_dict(
            unet_base, lora.unet, lora.rank_unet, alpha=alpha,
            expected_modules=lora.unet_modules, source=f"{lora_file} (state_dict_unet)",
        )  # fmt: skip
        vae_sd = merge_peft_state_dict(
            vae_base, lora.vae, lora.rank_vae, alpha=alpha,
            expected_modules=lora.vae_modules, source=f"{lora_file} (state_dict_vae)",
        )  # fmt: skip
    half_sd, half_cfg = None, None
    if half_decoder is not None:
        half_sd = read_half_decoder(half_decoder, allow_unsafe_pickle=allow_unsafe_pickle)
        half_cfg = _half_decoder_config(half_sd)
    config = OSEDiffConfig(unet=unet_cfg, vae=vae_cfg, half_decoder=half_cfg)
    sd = teacher_state_dict(unet_sd, vae_sd, half_sd)
    return config, teacher_params_from_torch(sd, config, source=str(lora_file))


def _half_decoder_config(half_sd: Mapping[str, np.ndarray]) -> VAEConfig:
    """Half-decoder widths from its up blocks (block i has width block_out_channels[-1 - i])."""
    widths = []
    i = 0
    while f"up_blocks.{i}.resnets.0.conv1.weight" in half_sd:
        widths.append(int(np.shape(half_sd[f"up_blocks.{i}.resnets.0.conv1.weight"])[0]))
        i += 1
    if not widths:
        raise CheckpointMismatchError(
            "half decoder", "Decoder", ["up_blocks.0.resnets.0.conv1.weight"]
        )
    return VAEConfig(block_out_channels=tuple(reversed(widths)))


def save_teacher(directory: str | Path, config: OSEDiffConfig, params: Any) -> Path:
    """Write a converted teacher folder (kind ``osediff``)."""
    return write_converted(directory, KIND, config, params)


def load_teacher(
    directory: str | Path, dtype: Any | None = None
) -> tuple[OSEDiff, dict[str, Any], OSEDiffConfig]:
    """``(module, params on device, config)`` from a :func:`save_teacher` folder."""
    meta = read_converted_meta(directory, KIND)
    config = OSEDiffConfig.from_dict(meta["config"])
    if dtype is not None:
        config = config.with_dtype(dtype)
    params = read_converted_params(directory)
    check_params(params, abstract_params(config), str(Path(directory) / CONVERTED_PARAMS), KIND)
    return OSEDiff(config), jax.tree.map(jnp.asarray, params), config
