"""Public loaders: diffusers folders / single files -> ``(module, params)``, and our own format.

Our format is a folder with ``adcsr_jax.json`` (``{"format", "kind", "config"}``) and
``params.safetensors`` whose keys are '/'-joined Flax paths (fp32, HWIO / (in, out) layouts).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from adcsr_jax.models import AutoencoderKL, Decoder, UNet2D, UNetConfig, VAEConfig
from adcsr_jax.models.config_utils import UnsupportedConfigError
from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
from adcsr_jax.weights.io import (
    find_weights_file,
    read_safetensors,
    read_state_dict,
    write_safetensors,
)
from adcsr_jax.weights.networks import (
    decoder_template,
    unet_params_from_torch,
    unet_template,
    vae_params_from_torch,
    vae_template,
)

FORMAT = "adcsr-jax/1"
CONVERTED_CONFIG = "adcsr_jax.json"
CONVERTED_PARAMS = "params.safetensors"


@dataclasses.dataclass(frozen=True)
class _Kind:
    config_cls: type
    module_cls: type
    template: Callable[[Any], Any]


KINDS: dict[str, _Kind] = {
    "unet": _Kind(UNetConfig, UNet2D, unet_template),
    "vae": _Kind(VAEConfig, AutoencoderKL, vae_template),
    "decoder": _Kind(VAEConfig, Decoder, decoder_template),
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise CheckpointReadError(f"cannot read {path}: {e}") from e
    except ValueError as e:
        raise CheckpointReadError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path}: expected a JSON object")
    return data


def to_device(params: dict[str, Any]) -> dict[str, Any]:
    """Nested numpy param dict -> jax arrays. Empties ``params`` as it goes, so each numpy leaf
    is released once copied and a multi-GB tree is never held twice."""
    out = {}
    for key in list(params):
        value = params.pop(key)
        out[key] = to_device(value) if isinstance(value, dict) else jnp.asarray(value)
    return out


def _resolve(
    path: str | Path, subfolder: str, class_name: str, config: Any, dtype: Any, from_diffusers: Any
) -> tuple[Path, Any]:
    """(weights file, our config) for a diffusers folder, a pipeline root or a single file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointReadError(f"{path}: no such file or directory")
    if path.is_dir() and not (path / "config.json").is_file() and (path / subfolder).is_dir():
        path = path / subfolder
    folder = path if path.is_dir() else path.parent
    weights = find_weights_file(path) if path.is_dir() else path
    if config is None:
        cfg_file = folder / "config.json"
        if not cfg_file.is_file():
            if path.is_dir():
                raise CheckpointReadError(
                    f"{path}: no config.json (a diffusers model folder has one)"
                )
            return weights, None
        raw = _read_json(cfg_file)
        name = raw.get("_class_name", class_name)
        if name != class_name:
            raise UnsupportedConfigError(
                f"{cfg_file}: _class_name is {name!r}, expected {class_name!r}"
            )
        try:
            return weights, from_diffusers(raw, dtype)
        except UnsupportedConfigError as e:
            raise UnsupportedConfigError(f"{cfg_file}: {e}") from None
    return weights, config


def _is_converted(path: Path) -> bool:
    return path.is_dir() and (path / CONVERTED_CONFIG).is_file()


def load_unet(
    path: str | Path, dtype: Any = jnp.float32, *, config: UNetConfig | None = None
) -> tuple[UNet2D, dict[str, Any]]:
    """``(UNet2D, params)`` from a diffusers ``unet/`` folder (or pipeline root), a single
    ``.safetensors``/torch file (config: ``config``, else a ``config.json`` beside it, else
    SD 2.1-base), or a folder written by :func:`save_converted`. ``dtype`` = compute dtype."""
    if _is_converted(Path(path)):
        return load_converted(path, dtype, kind="unet")
    weights, cfg = _resolve(
        path, "unet", "UNet2DConditionModel", config, dtype, UNetConfig.from_diffusers
    )
    cfg = dataclasses.replace(cfg or UNetConfig(), dtype=jnp.dtype(dtype).name)
    params = unet_params_from_torch(
        read_state_dict(weights), cfg, source=str(weights), consume=True
    )
    return UNet2D(cfg), to_device(params)


def load_vae(
    path: str | Path, dtype: Any = jnp.float32, *, config: VAEConfig | None = None
) -> tuple[AutoencoderKL, dict[str, Any]]:
    """``(AutoencoderKL, params)`` from a diffusers ``vae/`` folder (or pipeline root), a single
    file (config as for :func:`load_unet`; default SD 2.1-base's VAE) or our converted folder."""
    if _is_converted(Path(path)):
        return load_converted(path, dtype, kind="vae")
    weights, cfg = _resolve(path, "vae", "AutoencoderKL", config, dtype, VAEConfig.from_diffusers)
    cfg = dataclasses.replace(cfg or VAEConfig(), dtype=jnp.dtype(dtype).name)
    params = vae_params_from_torch(read_state_dict(weights), cfg, source=str(weights), consume=True)
    return AutoencoderKL(cfg), to_device(params)


def save_converted(directory: str | Path, kind: str, config: Any, params: Any) -> Path:
    """Write ``params`` (fp32) and ``config`` of a ``kind`` in ``KINDS`` to ``directory``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    return write_converted(directory, kind, config, params)


def write_converted(directory: str | Path, kind: str, config: Any, params: Any) -> Path:
    """Write a converted folder: fp32 ``params`` as safetensors + JSON with ``kind`` and ``config``.

    The one writer behind every network's saver (UNet, VAE, decoder, student, teacher).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {
        "/".join(k): np.asarray(jax.device_get(v), np.float32)
        for k, v in traverse_util.flatten_dict(params).items()
    }
    write_safetensors(directory / CONVERTED_PARAMS, flat, {"format": FORMAT, "kind": kind})
    meta = {"format": FORMAT, "kind": kind, "config": config.to_dict()}
    (directory / CONVERTED_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def check_params(params: Any, template: Any, source: str, target: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``params`` has exactly ``template``'s shapes."""
    have = {"/".join(k): tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(params).items()}
    want = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(template).items()}
    mismatched = [(k, have[k], want[k]) for k in want if k in have and have[k] != want[k]]
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, target, missing, unexpected, mismatched)


def load_converted(
    directory: str | Path, dtype: Any | None = None, *, kind: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """``(module, params)`` from a :func:`save_converted` folder; ``dtype`` overrides the saved one."""
    directory = Path(directory)
    meta = _read_json(directory / CONVERTED_CONFIG)
    if meta.get("format") != FORMAT:
        raise CheckpointReadError(
            f"{directory}: format {meta.get('format')!r}, expected {FORMAT!r}"
        )
    saved = meta.get("kind")
    if saved not in KINDS or (kind is not None and saved != kind):
        raise CheckpointReadError(
            f"{directory}: holds a {saved!r}, expected {kind or sorted(KINDS)}"
        )
    spec = KINDS[saved]
    if not isinstance(meta.get("config"), Mapping):
        raise CheckpointReadError(f"{directory / CONVERTED_CONFIG}: no 'config' object")
    config = spec.config_cls.from_dict(meta["config"])
    if dtype is not None:
        config = dataclasses.replace(config, dtype=jnp.dtype(dtype).name)
    tensors, _ = read_safetensors(directory / CONVERTED_PARAMS)
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in tensors.items()})
    check_params(params, spec.template(config), str(directory / CONVERTED_PARAMS), saved)
    return spec.module_cls(config), to_device(params)
