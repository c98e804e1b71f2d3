"""diffusers/torch state dict <-> Flax param tree, for any network config.

A torch key ``down_blocks.0.attentions.1.proj_in.weight`` maps to the Flax path
``down_blocks_0/attentions_1/proj_in/kernel`` (numeric indices join the preceding name; ``weight``
becomes ``kernel`` for convs and Dense layers and ``scale`` for norms). Layouts: conv OIHW -> HWIO,
Linear (out, in) -> (in, out); a 1x1 conv weight feeding a Dense is squeezed (old VAE attention).
Old VAE attention names ``query/key/value/proj_attn`` map to ``to_q/to_k/to_v/to_out.0``.
The expected tree comes from ``jax.eval_shape`` of the module's ``init``, so nothing is allocated
and every config (e.g. the pruned UNet without time embedding) works without special cases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from adcsr_jax.weights.errors import CheckpointMismatchError

LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out_0"}
# diffusers module names that really end in _<digit> (not a list index).
LITERAL_NAMES = frozenset({"linear_1", "linear_2"})
LDM_MARKERS = ("model.diffusion_model.", "encoder.down.", "decoder.up.", "first_stage_model.")


def torch_key_to_path(key: str) -> tuple[tuple[str, ...], str]:
    """``'a.b.0.c.weight'`` -> ``(('a', 'b_0', 'c'), 'weight')`` with legacy names renamed."""
    *modules, leaf = key.split(".")
    path: list[str] = []
    for part in modules:
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(LEGACY_NAMES.get(part, part))
    return tuple(path), leaf


def path_to_torch_key(path: tuple[str, ...]) -> str:
    """Inverse of :func:`torch_key_to_path` for our own names (``kernel``/``scale`` -> ``weight``)."""
    *modules, leaf = path
    parts = [m if m in LITERAL_NAMES else re.sub(r"_(\d+)$", r".\1", m) for m in modules]
    return ".".join([*parts, "weight" if leaf in ("kernel", "scale") else leaf])


def torch_layout(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    """A Flax param shape written in torch layout (for error messages and export)."""
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _to_flax_layout(array: np.ndarray, leaf: str, expected: tuple[int, ...]) -> np.ndarray:
    if leaf != "kernel":
        return array
    if array.ndim == 4 and len(expected) == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2 and len(expected) == 2:
        return array.T
    if array.ndim == 4 and len(expected) == 2 and array.shape[2:] == (1, 1):
        return array[:, :, 0, 0].T
    return array


def params_from_torch(
    state_dict: Mapping[str, np.ndarray],
    template: Any,
    *,
    source: str = "state dict",
    target: str = "network",
    ignore_prefixes: Iterable[str] = (),
    consume: bool = False,
) -> dict[str, Any]:
    """Nested fp32 numpy param dict shaped like ``template`` (abstract params) from torch names.

    Raises :class:`CheckpointMismatchError` naming every missing, unexpected and misshapen key.
    ``consume=True`` pops entries from ``state_dict`` (a dict the caller owns) as they are
    converted, so a multi-GB checkpoint is not held twice.
    """
    expected = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(template).items()}
    ignore = tuple(ignore_prefixes)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for key in list(state_dict):
        value = state_dict.pop(key) if consume else state_dict[key]
        if ignore and key.startswith(ignore):
            continue
        modules, leaf = torch_key_to_path(key)
        names = {"weight": ("kernel", "scale"), "bias": ("bias",)}.get(leaf, ())
        path = next((modules + (n,) for n in names if modules + (n,) in expected), None)
        if path is None or path in flat:
            unexpected.append(key)
            continue
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            mismatched.append((key, array.shape, torch_layout(expected[path], path[-1])))
            continue
        array = _to_flax_layout(array.astype(np.float32), path[-1], expected[path])
        if array.shape != expected[path]:
            mismatched.append((key, tuple(np.shape(value)), torch_layout(expected[path], path[-1])))
            continue
        flat[path] = array
    missing = [path_to_torch_key(p) for p in expected if p not in flat]
    missing = [k for k in missing if k not in {m[0] for m in mismatched}]
    if missing or unexpected or mismatched:
        hint = ""
        if any(k.startswith(LDM_MARKERS) for k in unexpected):
            hint = (
                "names look like an original LDM/CompVis checkpoint; convert it to diffusers first"
            )
        elif unexpected and not flat:
            prefixes = sorted({k.split(".")[0] + "." for k in unexpected})[:5]
            hint = f"no key fits; prefixes {prefixes} may need stripping (weights.strip_prefix)"
        raise CheckpointMismatchError(source, target, missing, sorted(unexpected), mismatched, hint)
    return traverse_util.unflatten_dict(flat)


def params_to_torch(params: Any) -> dict[str, np.ndarray]:
    """Flax params -> diffusers-named torch-layout numpy state dict (inverse of the loader)."""
    out = {}
    for path, value in traverse_util.flatten_dict(params).items():
        array = np.asarray(jax.device_get(value), np.float32)
        if path[-1] == "kernel" and array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)
        elif path[-1] == "kernel" and array.ndim == 2:
            array = array.T
        out[path_to_torch_key(path)] = np.ascontiguousarray(array)
    return out
