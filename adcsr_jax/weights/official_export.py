"""Our converted student folder -> AdcSR's official files, so the official PyTorch ``test.py`` runs it.

* ``net_params_<step>.pkl``: ``torch.save`` of the DDP ``state_dict`` of ``Net``:
  ``module.body.1.*`` the pruned UNet (diffusers names), ``module.body.2.*`` the decoder mid block,
  and the second copy of the UNet blocks under ``module.body.1.body.K.*`` that AdcSR's extra
  ``nn.Sequential`` registers (``load_state_dict(strict=True)`` in ``test.py`` needs them).
* ``halfDecoder.ckpt``: ``{"state_dict": {"decoder.<name>": tensor}}`` of the whole half-width
  diffusers ``Decoder`` (``train.py`` / ``test.py`` load it strictly): the student's frozen tail,
  and ``conv_in`` + ``mid_block`` from the half decoder's stem when given (stage 2 passes its
  frozen stem). Without a stem, the student's own mid block and a zero ``conv_in`` fill those
  slots: ``test.py`` never runs them, but such a file must not seed another ``train.py`` run.

The inverse is :func:`adcsr_jax.weights.adcsr_ckpt.convert_official` (``adcsr convert adcsr``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from adcsr_jax.weights.adcsr_ckpt import (
    _UNET_BODY,
    KIND,
    read_converted_meta,
    read_converted_params,
    read_half_decoder,
)
from adcsr_jax.weights.mapping import params_to_torch

log = logging.getLogger(__name__)


def net_state_dict(student_torch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``Net``'s DDP state dict (``module.`` prefix, duplicates included) from ``unet.*`` /
    ``mid_block.*`` student names."""
    out: dict[str, np.ndarray] = {}
    unet = {k[len("unet.") :]: v for k, v in student_torch.items() if k.startswith("unet.")}
    mid = {
        k[len("mid_block.") :]: v for k, v in student_torch.items() if k.startswith("mid_block.")
    }
    if not unet or not mid:
        raise KeyError("student state dict needs unet.* and mid_block.* entries")
    for key, value in unet.items():
        out[f"module.body.1.{key}"] = value
    for index, prefix in _UNET_BODY.items():
        for key, value in unet.items():
            if key.startswith(prefix):
                out[f"module.body.1.body.{index}.{key[len(prefix) :]}"] = value
    for key, value in mid.items():
        out[f"module.body.2.{key}"] = value
    return out


def half_decoder_state_dict(
    student_torch: Mapping[str, np.ndarray], stem: Mapping[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The whole half ``Decoder`` (diffusers names): tail from the student, stem from ``stem``
    (``conv_in.*`` / ``mid_block.*``) or, without it, zero conv_in + the student's mid block."""
    out = {k[len("decoder.") :]: v for k, v in student_torch.items() if k.startswith("decoder.")}
    if stem is None:
        mid = {k: v for k, v in student_torch.items() if k.startswith("mid_block.")}
        width = int(mid["mid_block.resnets.0.conv1.weight"].shape[0])
        out.update(mid)
        out["conv_in.weight"] = np.zeros((width, 4, 3, 3), np.float32)
        out["conv_in.bias"] = np.zeros((width,), np.float32)
    else:
        missing = [
            p for p in ("conv_in.weight", "mid_block.resnets.0.conv1.weight") if p not in stem
        ]
        if missing:
            raise KeyError(f"half-decoder stem lacks {missing}")
        out.update({k: v for k, v in stem.items() if k.startswith(("conv_in.", "mid_block."))})
    return out


def _torch_save(obj: Any, path: Path) -> None:
    import torch

    def tensors(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {k: tensors(v) for k, v in x.items()}
        return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32)))

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors(obj), path)


def export_official(
    weights_dir: str | Path,
    out_dir: str | Path,
    *,
    step: int = 200,
    half_decoder_stem: Mapping[str, Any] | str | Path | None = None,
) -> list[Path]:
    """Write ``net_params_<step>.pkl`` and ``halfDecoder.ckpt`` under ``out_dir``.

    ``weights_dir``: our converted student folder (kind ``adcsr``). ``half_decoder_stem``: the
    frozen half decoder's ``{conv_in, mid_block}`` Flax params, or a ``halfDecoder.ckpt`` to take
    them from; ``None`` = zero conv_in + the student's mid block (inference only, logged).
    """
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    read_converted_meta(weights_dir, KIND)
    student = params_to_torch(read_converted_params(weights_dir))
    if half_decoder_stem is None:
        stem = None
        log.warning("%s: no half-decoder stem given; halfDecoder.ckpt gets a zero conv_in and "
                    "the student's mid block (fine for test.py, not for train.py)", out_dir)  # fmt: skip
    elif isinstance(half_decoder_stem, str | Path):
        stem = read_half_decoder(half_decoder_stem)
    else:
        stem = params_to_torch(dict(half_decoder_stem))
    net_path = out_dir / f"net_params_{int(step)}.pkl"
    half_path = out_dir / "halfDecoder.ckpt"
    _torch_save(net_state_dict(student), net_path)
    half = half_decoder_state_dict(student, stem)
    _torch_save({"state_dict": {f"decoder.{k}": v for k, v in half.items()}}, half_path)
    return [net_path, half_path]
