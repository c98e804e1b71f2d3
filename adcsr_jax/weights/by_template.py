"""Torch state dict -> Flax params by walking the expected tree (any leaf name).

``mapping.params_from_torch`` walks the torch keys and knows the leaves ``weight``/``bias``;
networks with other leaves (embedding tables, Swin's ``relative_position_bias_table``, RAM's
``label_embed``) are filled here instead: each template path is turned into its torch key
(``layers_0`` -> ``layers.0``; ``kernel``/``scale``/``embedding`` -> ``weight``; other leaves kept),
the array is transposed to Flax layout (Linear (out, in) -> (in, out), conv OIHW -> HWIO) and
checked. Every missing, misshapen and (within ``owned_prefixes``) unexpected key is reported in
one :class:`CheckpointMismatchError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from adcsr_jax.weights.errors import CheckpointMismatchError
from adcsr_jax.weights.mapping import LITERAL_NAMES, torch_layout

_WEIGHT_LEAVES = ("kernel", "scale", "embedding")


def torch_key(path: tuple[str, ...]) -> str:
    """``('encoder', 'layers_0', 'fc1', 'kernel')`` -> ``'encoder.layers.0.fc1.weight'``."""
    *modules, leaf = path
    parts = [m if m in LITERAL_NAMES else re.sub(r"_(\d+)$", r".\1", m) for m in modules]
    return ".".join([*parts, "weight" if leaf in _WEIGHT_LEAVES else leaf])


def to_flax_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    """Torch layout -> Flax layout for a ``kernel`` (2-D transposed, 4-D OIHW -> HWIO)."""
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array


def params_by_template(
    state_dict: Mapping[str, np.ndarray],
    template: Any,
    *,
    source: str,
    target: str,
    prefix: str = "",
    owned_prefixes: Iterable[str] = ("",),
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """fp32 numpy params shaped like ``template`` from ``state_dict[prefix + torch_key(path)]``.

    Keys starting with one of ``owned_prefixes`` that the template does not use are reported
    as unexpected, unless they contain one of the ``ignore`` substrings (buffers).
    """
    ignore = tuple(ignore)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()
    missing: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for path, leaf in traverse_util.flatten_dict(template).items():
        key = prefix + torch_key(path)
        want = tuple(leaf.shape)
        if key not in state_dict:
            missing.append(key)
            continue
        used.add(key)
        array = np.asarray(state_dict[key])
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            mismatched.append((key, array.shape, torch_layout(want, path[-1])))
            continue
        array = to_flax_layout(array.astype(np.float32), path[-1])
        if array.shape != want:
            mismatched.append((key, tuple(np.shape(state_dict[key])), torch_layout(want, path[-1])))
            continue
        flat[path] = array
    owned = tuple(prefix + p for p in owned_prefixes)
    unexpected = sorted(
        k
        for k in state_dict
        if k.startswith(owned) and k not in used and not any(s in k for s in ignore)
    )
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, target, missing, unexpected, mismatched)
    return traverse_util.unflatten_dict(flat)
