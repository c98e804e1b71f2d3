"""LoRA adapters (``adcsr_jax.nn.lora``) <-> PEFT's names and torch layouts.

PEFT names a LoRA weight ``<module>.lora_A.<adapter>.weight`` / ``<module>.lora_B.<adapter>.weight``
inside a wrapped model (``peft/tuners/lora/layer.py``); a ``PeftModel`` adds the prefix
``base_model.model.``, a diffusers model after ``add_adapter`` (AdcSR ``utils.add_lora_to_unet``)
has none. ``save_pretrained`` files drop the adapter name (``<prefix><module>.lora_A.weight``),
one folder per adapter with its ``adapter_config.json``. Layouts: Linear ``A (r, in)``,
``B (out, r)``; conv ``A (r, in, kh, kw)``, ``B (out, r, 1, 1)``. Module names are diffusers'
(``down_blocks.0.attentions.0.proj_in``), from our paths by :func:`path_to_torch_key`.

A PyTorch user loads :func:`lora_to_peft`'s dict with ``model.load_state_dict(sd, strict=False)``
(a ``PeftModel`` with the same adapters, or, with ``prefix=""``, a diffusers model after
``add_adapter``), and a folder of :func:`save_peft_adapters` with
``PeftModel.from_pretrained(model, folder / adapter, adapter_name=adapter)`` and ``load_adapter``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from adcsr_jax.nn.lora import LoraSpec, init_lora, lora_targets
from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
from adcsr_jax.weights.io import read_safetensors, write_safetensors
from adcsr_jax.weights.mapping import path_to_torch_key

PEFT_PREFIX = "base_model.model."
ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def module_name(path: Sequence[str]) -> str:
    """Our module path ``('down_blocks_0', 'resnets_0', 'conv1')`` -> ``down_blocks.0.resnets.0.conv1``."""
    return path_to_torch_key((*path, "kernel"))[: -len(".weight")]


def _to_torch(array: Any) -> np.ndarray:
    a = np.asarray(jax.device_get(array), np.float32)
    if a.ndim == 2:
        return np.ascontiguousarray(a.T)
    return np.ascontiguousarray(a.transpose(3, 2, 0, 1))


def _from_torch(array: Any, ndim: int) -> np.ndarray:
    a = np.asarray(array, np.float32)
    if ndim == 2:
        return a.T
    return a.transpose(2, 3, 1, 0)


def _torch_shape(shape: Sequence[int]) -> tuple[int, ...]:
    s = tuple(int(d) for d in shape)
    return s[::-1] if len(s) == 2 else (s[3], s[2], s[0], s[1])


def lora_to_peft(
    lora: Mapping[str, Any], *, prefix: str = PEFT_PREFIX, with_adapter: bool = True
) -> dict[str, np.ndarray]:
    """``{adapter: {path: {lora_A, lora_B}}}`` -> PEFT state dict (fp32 numpy, torch layouts).

    Keys ``<prefix><module>.lora_{A,B}.<adapter>.weight``; ``with_adapter=False`` drops the
    adapter name (``save_pretrained`` / ``set_peft_model_state_dict`` form; one adapter only).
    """
    if not with_adapter and len(lora) != 1:
        raise ValueError(f"with_adapter=False needs one adapter, got {sorted(lora)}")
    out = {}
    for adapter, tree in lora.items():
        tag = f".{adapter}" if with_adapter else ""
        for key, value in traverse_util.flatten_dict(tree).items():
            ab = {"lora_A": "A", "lora_B": "B"}[key[-1]]
            out[f"{prefix}{module_name(key[:-1])}.lora_{ab}{tag}.weight"] = _to_torch(value)
    return out


def lora_from_peft(
    state_dict: Mapping[str, Any],
    specs: Sequence[LoraSpec],
    base_params: Any,
    *,
    source: str = "PEFT state dict",
    adapter: str | None = None,
) -> dict[str, Any]:
    """PEFT state dict -> the LoRA tree for ``specs`` on ``base_params`` (arrays or abstract).

    Reads keys with or without ``base_model.model.``; keys without ``.lora_`` (base layers) are
    ignored. ``adapter``: the adapter the keys belong to when they carry no adapter name
    (``save_pretrained`` files). Every missing, unexpected and misshapen LoRA key is named in one
    :class:`CheckpointMismatchError`.
    """
    template = jax.eval_shape(lambda p: init_lora(specs, p, jax.random.key(0)), base_params)
    expected = {}
    for name, tree in template.items():
        for key, value in traverse_util.flatten_dict(tree).items():
            ab = key[-1][-1]
            expected[f"{module_name(key[:-1])}.lora_{ab}.{name}.weight"] = (name, key, value.shape)
    flat: dict[str, dict] = {s.name: {} for s in specs}
    unexpected, mismatched, seen = [], [], set()
    for raw in state_dict:
        key = raw[len(PEFT_PREFIX) :] if raw.startswith(PEFT_PREFIX) else raw
        m = _KEY.match(key)
        if m is None:
            continue
        name = m["adapter"] or adapter
        full = f"{m['module']}.lora_{m['ab']}.{name}.weight"
        if full not in expected or full in seen:
            unexpected.append(raw)
            continue
        seen.add(full)
        spec_name, path, shape = expected[full]
        value = np.asarray(state_dict[raw])
        if tuple(value.shape) != _torch_shape(shape):
            mismatched.append((raw, tuple(value.shape), _torch_shape(shape)))
            continue
        flat[spec_name][path] = _from_torch(value, len(shape))
    missing = sorted(k for k in expected if k not in seen)
    if missing or unexpected or mismatched:
        hint = ""
        if unexpected and all(_KEY.match(k) and not _KEY.match(k)["adapter"] for k in unexpected):
            hint = "keys carry no adapter name: pass adapter=<name>"
        raise CheckpointMismatchError(
            source,
            f"LoRA adapters {[s.name for s in specs]}",
            missing,
            unexpected,
            mismatched,
            hint,
        )
    return {name: traverse_util.unflatten_dict(tree) for name, tree in flat.items()}


def peft_adapter_config(spec: LoraSpec, base_params: Any) -> dict[str, Any]:
    """The ``adapter_config.json`` of one adapter (``LoraConfig`` fields; the rest default)."""
    paths = lora_targets([spec], base_params)[spec.name]
    return {
        "peft_type": "LORA",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "init_lora_weights": "gaussian",
        "target_modules": [module_name(p) for p in paths],
        "use_rslora": False,
        "use_dora": False,
    }


def save_peft_adapters(
    directory: str | Path, lora: Mapping[str, Any], specs: Sequence[LoraSpec], base_params: Any
) -> list[Path]:
    """One PEFT ``save_pretrained`` folder per adapter: ``<directory>/<adapter>/{config, weights}``."""
    directory = Path(directory)
    written = []
    for spec in specs:
        folder = directory / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        config = peft_adapter_config(spec, base_params)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        tensors = lora_to_peft({spec.name: lora[spec.name]}, with_adapter=False)
        write_safetensors(folder / ADAPTER_FILE, tensors, {"format": "pt"})
        written.append(folder)
    return written


def load_peft_adapters(
    directory: str | Path, specs: Sequence[LoraSpec], base_params: Any
) -> dict[str, Any]:
    """Inverse of :func:`save_peft_adapters`; checks each folder's rank and alpha against ``specs``."""
    directory = Path(directory)
    out = {}
    for spec in specs:
        folder = directory / spec.name
        try:
            config = json.loads((folder / CONFIG_FILE).read_text())
        except (OSError, ValueError) as e:
            raise CheckpointReadError(f"{folder / CONFIG_FILE}: {e}") from e
        got = (config.get("r"), float(config.get("lora_alpha", 8)))
        if got != (spec.rank, float(spec.alpha)):
            raise CheckpointReadError(
                f"{folder / CONFIG_FILE}: r={got[0]}, lora_alpha={got[1]}; expected "
                f"r={spec.rank}, lora_alpha={spec.alpha} for adapter {spec.name!r}"
            )
        tensors, _ = read_safetensors(folder / ADAPTER_FILE)
        part = lora_from_peft(
            tensors, [spec], base_params, source=str(folder / ADAPTER_FILE), adapter=spec.name
        )
        out[spec.name] = part[spec.name]
    return out
