"""AdcSR's half-width VAE decoder: its initial weights from SD, and every layout people store it in.

* **Init** (:func:`prune_decoder_state_dict`): the leading ``ratio`` (0.5) of every channel axis
  of SD's VAE decoder, as AdcSR's ``halve_channels`` prunes the UNet (``W[:int(r*out),
  :int(r*in)]``, biases and norm affines ``[:int(r*n)]``), except the latent input of
  ``conv_in`` and the RGB output of ``conv_out``, which keep their sizes. Widths
  (128, 256, 512, 512) -> (64, 128, 256, 256); GroupNorms keep 32 groups (AdcSR's group rule,
  the first of 32, 24, ... dividing the width, gives 32 at every width of the half decoder).
* **halfDecoder.ckpt** (AdcSR ``train.py`` / ``test.py``): ``torch.load(...)["state_dict"]``,
  keys containing ``decoder`` with ``decoder.`` removed, loaded strictly into diffusers'
  ``Decoder(block_out_channels=[64, 128, 256, 256], layers_per_block=2, norm_num_groups=32)``.
  :func:`write_half_decoder_ckpt` writes exactly that.
* **latent-diffusion / taming names** (``decoder.up.N.block.M...``, ``decoder.mid.attn_1.q``,
  ``decoder.norm_out``), what training the decoder with latent-diffusion's ``AutoencoderKL``
  leaves (AdcSR issue #21): :func:`ldm_to_diffusers` maps them as diffusers'
  ``convert_ldm_vae_checkpoint`` does (ldm ``up.i`` = diffusers ``up_blocks.{n-1-i}``,
  ``nin_shortcut`` = ``conv_shortcut``, 1x1-conv attention -> Linear).

:func:`read_half_decoder_state_dict` accepts both, :func:`load_half_decoder` also our converted
folder (kind ``decoder``); a mismatch names every missing, unexpected and misshapen key.
:func:`resolve_half_decoder_file` turns a stage-1 workdir into the ``halfDecoder.ckpt`` stage 1
exported there (what stage 2's ``model.half_decoder`` reads).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from adcsr_jax.models.vae import VAEConfig
from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
from adcsr_jax.weights.io import read_state_dict
from adcsr_jax.weights.loaders import CONVERTED_CONFIG, load_converted, write_converted
from adcsr_jax.weights.mapping import params_to_torch
from adcsr_jax.weights.networks import decoder_params_from_torch
from adcsr_jax.weights.prune import adcsr_groups, pruned

HALF_RATIO = 0.5
CKPT_NAME = "halfDecoder.ckpt"
LDM_MARKERS = ("up.", "mid.", "norm_out.")
_LDM_RESNET = {"nin_shortcut": "conv_shortcut"}
_LDM_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def resolve_half_decoder_file(path: str | Path) -> Path:
    """A ``halfDecoder.ckpt`` file as it is, or a stage-1 workdir -> ``<workdir>/halfDecoder.ckpt``
    (``adcsr_jax.train.stage1`` exports it there at the end of a run or with ``--export-only``).

    :class:`CheckpointReadError` names what was looked for and what the folder holds.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointReadError(
            f"half decoder {path}: no such file or folder (expected a {CKPT_NAME} or a stage-1 "
            f"workdir holding one)"
        )
    ckpt = path / CKPT_NAME
    if ckpt.is_file():
        return ckpt
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    hint = ""
    if (path / "checkpoints").is_dir():
        hint = (
            f"; it has checkpoints/ but no export yet: run `adcsr train --config "
            f"configs/stage1.py:VARIANT --workdir {path} --export-only` to write {CKPT_NAME}"
        )
    raise CheckpointReadError(
        f"half decoder: the folder {path} has no {ckpt.name} (looked for {ckpt}; a stage-1 "
        f"workdir holds it after the run); it holds: {', '.join(found) or 'nothing'}{hint}"
    )


def half_decoder_config(
    sd: VAEConfig | None = None, ratio: float = HALF_RATIO, dtype: str | None = None
) -> VAEConfig:
    """The half decoder's :class:`VAEConfig` (decoder widths ``int(ratio * w)`` of ``sd``'s)."""
    sd = sd or VAEConfig()
    widths = tuple(pruned(w, ratio) for w in sd.decoder_widths)
    groups = sd.norm_num_groups
    for w in widths:
        if groups is None or w % groups or adcsr_groups(w) != groups:
            raise ValueError(
                f"half decoder width {w} (ratio {ratio} of {sd.decoder_widths}) does not keep "
                f"{groups} GroupNorm groups; choose widths that are multiples of {groups}"
            )
    return VAEConfig(
        in_channels=sd.in_channels,
        out_channels=sd.out_channels,
        latent_channels=sd.latent_channels,
        block_out_channels=widths,
        layers_per_block=sd.layers_per_block,
        norm_num_groups=groups,
        norm_eps=sd.norm_eps,
        mid_block_add_attention=sd.mid_block_add_attention,
        scaling_factor=sd.scaling_factor,
        dtype=dtype or sd.dtype,
        attention_query_chunk=sd.attention_query_chunk,
        conv_matmul_max_pixels=sd.conv_matmul_max_pixels,
    )


def prune_decoder_state_dict(
    state_dict: Mapping[str, np.ndarray], ratio: float = HALF_RATIO
) -> dict[str, np.ndarray]:
    """SD decoder state dict (diffusers names, no ``decoder.`` prefix) -> the half decoder's."""
    for key in ("conv_in.weight", "conv_out.weight"):
        if key not in state_dict:
            raise KeyError(f"SD decoder state dict lacks {key} (diffusers Decoder names expected)")
    out = {}
    for key, value in state_dict.items():
        w = np.asarray(value)
        keep_in = key == "conv_in.weight"  # latent channels
        keep_out = key.startswith("conv_out.")  # RGB
        if w.ndim in (2, 4):
            rows = w.shape[0] if keep_out else pruned(w.shape[0], ratio)
            cols = w.shape[1] if keep_in else pruned(w.shape[1], ratio)
            w = w[:rows, :cols]
        elif w.ndim == 1:
            w = w if keep_out else w[: pruned(w.shape[0], ratio)]
        else:
            raise ValueError(f"{key}: cannot prune a tensor of shape {w.shape}")
        out[key] = np.ascontiguousarray(w)
    return out


def prune_decoder_params(
    sd_decoder_params: Any, config: VAEConfig, ratio: float = HALF_RATIO
) -> dict[str, Any]:
    """Flax params of SD's ``Decoder`` -> Flax params of the half decoder ``config`` (numpy)."""
    torch_sd = prune_decoder_state_dict(params_to_torch(sd_decoder_params), ratio)
    return decoder_params_from_torch(torch_sd, config, source="pruned SD decoder")


def _groups_of(widths: list[int]) -> int:
    return 32 if all(w % 32 == 0 for w in widths) else adcsr_groups(min(widths))


def _count_resnets(sd: Mapping[str, Any]) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(r"up_blocks\.0\.resnets\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def is_ldm_layout(state_dict: Mapping[str, Any]) -> bool:
    """Whether decoder names (prefix removed) are latent-diffusion's (``up.N.block.M...``)."""
    return any(k.startswith(LDM_MARKERS) for k in state_dict)


def ldm_to_diffusers(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """latent-diffusion / taming ``Decoder`` names -> diffusers ``Decoder`` names and layouts.

    Keys that fit neither scheme are kept as they are, so the strict check names them.
    """
    ups = {int(m.group(1)) for k in state_dict if (m := re.match(r"up\.(\d+)\.", k))}
    n = max(ups) + 1 if ups else 0
    out = {}
    for key, value in state_dict.items():
        new = key
        if m := re.match(r"mid\.block_(\d)\.(.*)$", key):
            rest = m.group(2).split(".", 1)
            rest[0] = _LDM_RESNET.get(rest[0], rest[0])
            new = f"mid_block.resnets.{int(m.group(1)) - 1}.{'.'.join(rest)}"
        elif m := re.match(r"mid\.attn_1\.([a-z_]+)\.(weight|bias)$", key):
            if m.group(1) in _LDM_ATTN:
                new = f"mid_block.attentions.0.{_LDM_ATTN[m.group(1)]}.{m.group(2)}"
                if m.group(1) != "norm" and np.ndim(value) == 4:
                    value = np.asarray(value)[:, :, 0, 0]
        elif m := re.match(r"up\.(\d+)\.block\.(\d+)\.([a-z_0-9]+)\.(.*)$", key):
            i, j, sub, leaf = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            new = f"up_blocks.{n - 1 - i}.resnets.{j}.{_LDM_RESNET.get(sub, sub)}.{leaf}"
        elif m := re.match(r"up\.(\d+)\.upsample\.conv\.(.*)$", key):
            new = f"up_blocks.{n - 1 - int(m.group(1))}.upsamplers.0.conv.{m.group(2)}"
        elif key.startswith("norm_out."):
            new = "conv_norm_out." + key[len("norm_out.") :]
        out[new] = np.asarray(value)
    return out


def decoder_entries(raw: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """AdcSR's selection rule: entries whose name contains ``decoder``, up to ``decoder.`` removed.

    AdcSR writes ``k.replace("decoder.", "")``; for its own files (``decoder.conv_in.weight``)
    that is the same as dropping everything up to the first ``decoder.``, which also reads
    ``first_stage_model.decoder.*`` (a latent-diffusion LatentDiffusion checkpoint).
    """
    out = {}
    for key, value in raw.items():
        if "decoder." in key:
            out[key.split("decoder.", 1)[1]] = value
        elif "decoder" in key:
            out[key] = value  # kept so that the strict check names it
    if not out:
        raise CheckpointReadError(
            f"{source}: no entry name contains 'decoder' (found e.g. {sorted(raw)[:5]}); a half "
            f"decoder checkpoint has 'decoder.*' keys in a 'state_dict'"
        )
    return out


def read_half_decoder_state_dict(
    path: str | Path, *, allow_unsafe_pickle: bool = False
) -> dict[str, np.ndarray]:
    """Diffusers-named ``Decoder`` state dict from a ``halfDecoder.ckpt`` in AdcSR's layout or in
    latent-diffusion's (``decoder.up.N.block.M...``); torch pickle or safetensors."""
    raw = read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
    sd = decoder_entries(raw, str(path))
    return ldm_to_diffusers(sd) if is_ldm_layout(sd) else sd


def config_from_state_dict(sd: Mapping[str, np.ndarray], dtype: str = "float32") -> VAEConfig:
    """The decoder's :class:`VAEConfig` read off the tensors (widths, ResNets per up block)."""
    keys = [f"up_blocks.{i}.resnets.0.conv1.weight" for i in range(4)]
    missing = [k for k in keys + ["conv_in.weight", "conv_out.weight"] if k not in sd]
    if missing:
        raise CheckpointMismatchError("state dict", "half Decoder", missing)
    widths = tuple(reversed([int(np.shape(sd[k])[0]) for k in keys]))
    return VAEConfig(
        in_channels=3,
        out_channels=int(np.shape(sd["conv_out.weight"])[0]),
        latent_channels=int(np.shape(sd["conv_in.weight"])[1]),
        block_out_channels=widths,
        layers_per_block=_count_resnets(sd) - 1,
        norm_num_groups=_groups_of(list(widths)),
        dtype=dtype,
    )


def load_half_decoder(
    path: str | Path, config: VAEConfig | None = None, *, allow_unsafe_pickle: bool = False
) -> tuple[VAEConfig, dict[str, Any]]:
    """``(config, fp32 numpy params)`` of a half decoder from our converted folder (kind
    ``decoder``), AdcSR's ``halfDecoder.ckpt`` or a latent-diffusion-named checkpoint.

    ``config`` defaults to the one read off the weights; the params are checked strictly
    against it (:class:`CheckpointMismatchError` names every missing / unexpected key).
    """
    path = Path(path)
    if path.is_dir() and (path / CONVERTED_CONFIG).is_file():
        module, params = load_converted(path, kind="decoder")
        import jax  # noqa: PLC0415

        return module.config, jax.tree.map(np.asarray, params)
    sd = read_half_decoder_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
    config = config or config_from_state_dict(sd)
    params = decoder_params_from_torch(sd, config, source=str(path))
    return config, params


def save_half_decoder(directory: str | Path, config: VAEConfig, params: Any) -> Path:
    """Our converted folder (kind ``decoder``): what stage 2 and ``load_half_decoder`` read."""
    return write_converted(directory, "decoder", config, params)


def half_decoder_torch_state_dict(params: Any) -> dict[str, np.ndarray]:
    """``{"decoder.<diffusers name>": array}`` in torch layouts (what halfDecoder.ckpt holds)."""
    return {f"decoder.{k}": v for k, v in params_to_torch(params).items()}


def write_half_decoder_ckpt(path: str | Path, params: Any) -> Path:
    """``torch.save({"state_dict": {"decoder.*": tensor}})``: AdcSR's ``train.py`` loads it strictly."""
    import torch  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in
          half_decoder_torch_state_dict(params).items()}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": sd}, tmp)
    tmp.replace(path)
    return path
