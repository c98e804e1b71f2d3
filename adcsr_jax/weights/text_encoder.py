"""SD 2.1's ``text_encoder/`` (transformers ``CLIPTextModel``) -> :class:`CLIPTextTransformer`.

Reads ``config.json`` beside the weights (``model.safetensors`` preferred, else
``pytorch_model.bin``); torch names ``text_model.<path>`` map onto the Flax paths ``<path>``
(``embeddings.position_ids`` is a buffer and ignored). Public entry: :func:`load_text_encoder`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.models import abstract_params_of
from adcsr_jax.models.config_utils import UnsupportedConfigError
from adcsr_jax.models.text import CLIPTextTransformer, TextConfig
from adcsr_jax.weights.by_template import params_by_template
from adcsr_jax.weights.errors import CheckpointReadError
from adcsr_jax.weights.io import find_weights_file, read_state_dict
from adcsr_jax.weights.loaders import to_device

_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")


def text_encoder_template(config: TextConfig) -> Any:
    """Abstract params of :class:`CLIPTextTransformer` for ``config`` (nothing allocated)."""
    ids = jax.ShapeDtypeStruct((1, config.max_position_embeddings), jnp.int32)
    return abstract_params_of(CLIPTextTransformer(config), ids)


def text_encoder_params_from_torch(
    state_dict: Mapping[str, np.ndarray], config: TextConfig, *, source: str = "state dict"
) -> dict[str, Any]:
    """Params from a ``CLIPTextModel`` state dict: ``text_model.``-prefixed names (SD 2.1's
    files, transformers 4) or unprefixed ones (transformers 5's ``state_dict()``)."""
    prefix = "text_model." if any(k.startswith("text_model.encoder.") for k in state_dict) else ""
    return params_by_template(
        state_dict,
        text_encoder_template(config),
        source=source,
        target=f"CLIPTextTransformer ({config.num_hidden_layers} layers, "
        f"width {config.hidden_size})",
        prefix=prefix,
        owned_prefixes=("embeddings.", "encoder.", "final_layer_norm."),
        ignore=("position_ids",),
    )


def _read_config(path: Path, dtype: Any) -> TextConfig:
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise CheckpointReadError(f"cannot read {path}: {e}") from e
    except ValueError as e:
        raise CheckpointReadError(f"{path}: invalid JSON: {e}") from e
    arch = raw.get("architectures") or []
    if arch and not set(arch) & set(_CLASSES):
        raise UnsupportedConfigError(f"{path}: architectures {arch}, expected one of {_CLASSES}")
    try:
        return TextConfig.from_transformers(raw, jnp.dtype(dtype).name)
    except (UnsupportedConfigError, TypeError) as e:
        raise UnsupportedConfigError(f"{path}: {e}") from None


def load_text_encoder(
    path: str | Path, dtype: Any = jnp.float32, *, config: TextConfig | None = None
) -> tuple[CLIPTextTransformer, dict[str, Any]]:
    """``(CLIPTextTransformer, params)`` from SD 2.1's ``text_encoder/`` folder, a pipeline root
    holding one, or a single weights file (config: ``config``, else a ``config.json`` beside it,
    else SD 2.1's). ``module.apply({'params': params}, input_ids)`` gives ``(B, 77, 1024)``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointReadError(f"{path}: no such file or directory")
    if path.is_dir() and not (path / "config.json").is_file() and (path / "text_encoder").is_dir():
        path = path / "text_encoder"
    folder = path if path.is_dir() else path.parent
    weights = find_weights_file(path) if path.is_dir() else path
    if config is None:
        cfg_file = folder / "config.json"
        if cfg_file.is_file():
            config = _read_config(cfg_file, dtype)
        elif path.is_dir():
            raise CheckpointReadError(f"{path}: no config.json (a text_encoder/ folder has one)")
        else:
            config = TextConfig(dtype=jnp.dtype(dtype).name)
    else:
        config = TextConfig.from_dict({**config.to_dict(), "dtype": jnp.dtype(dtype).name})
    params = text_encoder_params_from_torch(read_state_dict(weights), config, source=str(weights))
    return CLIPTextTransformer(config), to_device(params)
