"""The student's initial weights from Stable Diffusion 2.1-base, exactly as AdcSR builds them.

AdcSR (``model.py: Net``, ``halve_channels``) takes SD's UNet and

1. replaces ``conv_in`` by a conv with 16 inputs whose weight is SD's tiled 4x on the input axis
   (bias copied), and ``conv_out`` by one with 342 outputs, SD's weight and bias tiled 86x on the
   output axis and truncated;
2. deletes ``time_embedding``, every ``time_emb_proj`` and every transformer ``attn2``/``norm2``;
3. slices every Conv2d / Linear weight to ``W[:int(r*out), :int(r*in)]`` and every bias and norm
   affine to ``[:int(r*n)]`` (r = 0.75), leading channels, no magnitude criterion.

After slicing, conv_in has 12 = 3 * 2 * 2 inputs (PixelUnshuffle(2)) and conv_out 256 outputs
(the half decoder's width). Both tilings only ever keep ``W[:, j % 4]`` / ``W[i % 4]``, so here
they are written for any ratio as "tile, then keep what the student needs". GroupNorm groups are
AdcSR's rule (first of 32, 24, 16, 12, 8, 6, 4, 2, 1 dividing the new width); the Flax UNet uses
``adcsr_jax.nn.group_count``, which agrees wherever this module accepts a ratio (else it raises).

Everything works on torch-named numpy state dicts (diffusers names), so the result can be
compared with the same surgery done in torch and mapped to Flax by the generic name mapping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

ADCSR_GROUP_CHOICES = (32, 24, 16, 12, 8, 6, 4, 2, 1)
REMOVED = re.compile(
    r"^time_embedding\.|\.time_emb_proj\.|\.transformer_blocks\.\d+\.(attn2|norm2)\."
)
DEFAULT_RATIO = 0.75


def adcsr_groups(width: int) -> int:
    """AdcSR's GroupNorm group count for a pruned width."""
    return next(g for g in ADCSR_GROUP_CHOICES if width % g == 0)


def pruned(n: int, ratio: float) -> int:
    """``int(n * ratio)``, AdcSR's width rule."""
    return int(n * ratio)


def _tiled_width(target: int, ratio: float) -> int:
    """Smallest tiled width whose pruned size is ``target`` (16 for 12 and 342 for 256 at 0.75)."""
    n = math.ceil(target / ratio)
    while pruned(n, ratio) < target:
        n += 1
    if pruned(n, ratio) != target:
        raise ValueError(f"no width prunes to {target} channels at ratio {ratio}")
    return n


def prune_unet_state_dict(
    state_dict: Mapping[str, np.ndarray],
    ratio: float = DEFAULT_RATIO,
    in_channels: int = 12,
    out_channels: int = 256,
) -> dict[str, np.ndarray]:
    """SD UNet state dict (diffusers names) -> AdcSR's pruned student UNet state dict.

    ``in_channels`` / ``out_channels`` are the student's conv_in inputs (PixelUnshuffle output)
    and conv_out outputs (half-decoder width). Raises ``KeyError`` naming missing SD tensors.
    """
    required = ["conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias"]
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise KeyError(f"SD UNet state dict lacks {missing} (is this a diffusers UNet?)")
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if REMOVED.search(key) or key.startswith("time_embedding."):
            continue
        w = np.asarray(value)
        if key == "conv_in.weight":  # tile on inputs: 4 -> 16 at r = 0.75
            n = _tiled_width(in_channels, ratio)
            w = w[:, np.arange(n) % w.shape[1]]
        elif key in ("conv_out.weight", "conv_out.bias"):  # tile on outputs: 4 -> 342
            n = _tiled_width(out_channels, ratio)
            w = w[np.arange(n) % w.shape[0]]
        if w.ndim in (2, 4):
            w = w[: pruned(w.shape[0], ratio), : pruned(w.shape[1], ratio)]
        elif w.ndim == 1:
            w = w[: pruned(w.shape[0], ratio)]
        else:
            raise ValueError(f"{key}: cannot prune a tensor of shape {w.shape}")
        out[key] = np.ascontiguousarray(w)
    _check_groups(out)
    return out


def _check_groups(state_dict: Mapping[str, np.ndarray]) -> None:
    """The Flax UNet's group rule must give AdcSR's group count at every norm width."""
    from adcsr_jax.nn import group_count

    for key, value in state_dict.items():
        is_group_norm = re.search(r"(norm1|norm2|norm|conv_norm_out)\.weight$", key)
        if is_group_norm and "transformer_blocks" not in key:
            width = int(value.shape[0])
            if adcsr_groups(width) != group_count(width):
                raise ValueError(
                    f"{key}: width {width} gets {adcsr_groups(width)} groups in AdcSR but "
                    f"{group_count(width)} in adcsr_jax.nn.group_count; this ratio is unsupported"
                )


def student_unet_widths(
    block_out_channels: tuple[int, ...], ratio: float = DEFAULT_RATIO
) -> tuple[int, ...]:
    """Pruned block widths: (320, 640, 1280, 1280) -> (240, 480, 960, 960) at 0.75."""
    return tuple(pruned(w, ratio) for w in block_out_channels)


def student_config(
    sd_block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20),
    ratio: float = DEFAULT_RATIO,
    decoder_block_out_channels: tuple[int, ...] = (64, 128, 256, 256),
    dtype: Any = "float32",
) -> Any:
    """The :class:`AdcSRConfig` that the pruned weights of an SD UNet fit (heads are kept)."""
    from adcsr_jax.models.adcsr import AdcSRConfig

    return AdcSRConfig(
        block_out_channels=student_unet_widths(tuple(sd_block_out_channels), ratio),
        num_attention_heads=tuple(num_attention_heads),
        decoder_block_out_channels=tuple(decoder_block_out_channels),
        dtype=dtype,
    )


def student_init_state_dict(
    sd_unet: Mapping[str, np.ndarray],
    half_decoder: Mapping[str, np.ndarray],
    ratio: float = DEFAULT_RATIO,
) -> dict[str, np.ndarray]:
    """The whole student's initial weights in the student's torch naming.

    ``unet.*`` = pruned SD UNet; ``mid_block.*`` = the half decoder's mid block (AdcSR deep-copies
    it into ``Net`` as the trainable copy); ``decoder.*`` = the half decoder's frozen tail.
    ``half_decoder`` uses diffusers ``Decoder`` names (``conv_in``, ``mid_block.*``, ...).
    """
    if "mid_block.resnets.0.conv1.weight" not in half_decoder:
        raise KeyError("half decoder state dict lacks mid_block.resnets.0.conv1.weight")
    mid_width = int(np.asarray(half_decoder["mid_block.resnets.0.conv1.weight"]).shape[0])
    unet = prune_unet_state_dict(sd_unet, ratio, in_channels=12, out_channels=mid_width)
    out = {f"unet.{k}": v for k, v in unet.items()}
    out.update(student_parts_from_half_decoder(half_decoder))
    return out


def student_parts_from_half_decoder(
    half_decoder: Mapping[str, np.ndarray], mid_block: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """``mid_block.*`` (from ``mid_block`` if given, else the decoder's) and ``decoder.*`` tail."""
    out = {}
    for key, value in half_decoder.items():
        if key.startswith(("up_blocks.", "conv_norm_out.", "conv_out.")):
            out[f"decoder.{key}"] = np.asarray(value)
        elif key.startswith("mid_block.") and mid_block is None:
            out[key] = np.asarray(value)
    if mid_block is not None:
        out.update({f"mid_block.{k}": np.asarray(v) for k, v in mid_block.items()})
    return out
