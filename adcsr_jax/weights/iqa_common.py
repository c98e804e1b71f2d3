"""Shared torch -> Flax conversion for the learned IQA metrics (MUSIQ, MANIQA, CLIP-IQA).

The Flax ports name their submodules after the PyTorch module paths, with a numeric path
component glued to its parent by ``_`` (``blocks.0.attn`` -> ``blocks_0/attn``). Leaves follow
Flax conventions: a 2-D ``weight`` becomes a transposed Dense ``kernel``, a 4-D ``weight`` an HWIO
conv ``kernel``, a 1-D ``weight`` a norm ``scale``; every other tensor keeps its name and layout.
torch is imported only inside the functions that read torch files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from adcsr_jax.weights.errors import CheckpointReadError

# Leaves that are buffers recomputed by the Flax ports (never parameters).
DROPPED_LEAVES = ("num_batches_tracked", "relative_position_index", "attn_mask")


def flax_path(torch_key: str, raw_leaves: Iterable[str] = ()) -> tuple[list[str], str]:
    """Split a torch key into Flax module path and leaf name (before layout conversion)."""
    parts = torch_key.split(".")
    leaf = parts[-1]
    path: list[str] = []
    for part in parts[:-1]:
        if (part.isdigit() or part.lstrip("-").isdigit()) and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    if leaf.isdigit():  # e.g. an nn.ParameterList entry
        path[-1] = f"{path[-1]}_{leaf}"
        leaf = "value"
    return path, leaf


def convert_leaf(leaf: str, value: np.ndarray, raw: bool) -> tuple[str, np.ndarray]:
    """Map a torch leaf to its Flax name and layout."""
    if raw:
        return leaf, value
    if leaf == "weight":
        if value.ndim == 2:
            return "kernel", value.T
        if value.ndim == 4:
            return "kernel", value.transpose(2, 3, 1, 0)
        if value.ndim == 1:
            return "scale", value
    return leaf, value


def torch_to_flax(
    state_dict: Mapping[str, Any],
    raw_modules: Iterable[str] = (),
    ignore_prefixes: Iterable[str] = (),
) -> dict[str, Any]:
    """Convert a flat torch state dict (numpy values) to a nested Flax ``params`` tree.

    ``raw_modules``: torch module paths whose ``weight`` keeps its torch layout (embeddings).
    ``ignore_prefixes``: keys starting with one of these are dropped (modules the metric never
    runs, e.g. the ViT blocks after the last one MANIQA reads).
    """
    raw_modules = tuple(raw_modules)
    ignore_prefixes = tuple(ignore_prefixes)
    tree: dict[str, Any] = {}
    for key, value in state_dict.items():
        if key.startswith(ignore_prefixes) or key.rsplit(".", 1)[-1] in DROPPED_LEAVES:
            continue
        value = np.asarray(value, dtype=np.float32)
        path, leaf = flax_path(key)
        raw = key.rsplit(".", 1)[0] in raw_modules
        leaf, value = convert_leaf(leaf, value, raw)
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = np.array(value, dtype=np.float32, order="C")
    return tree


def read_torch_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a torch ``.pth``/``.pt`` file (plain pickle or TorchScript archive) to numpy arrays.

    Nested ``params`` / ``state_dict`` / ``model`` dicts are unwrapped and a ``module.`` prefix
    (DataParallel) is stripped, as pyiqa's ``load_pretrained_network`` does.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"weight file not found: {path}")
    obj: Any
    try:
        obj = torch.jit.load(str(path), map_location="cpu").state_dict()
    except (RuntimeError, ValueError):
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    if hasattr(obj, "state_dict") and not isinstance(obj, Mapping):
        obj = obj.state_dict()
    for wrapper in ("params", "state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(f"{path}: expected a state dict, got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not hasattr(value, "detach"):
            continue
        key = key[7:] if key.startswith("module.") else key
        out[key] = value.detach().to(torch.float32).cpu().numpy()
    return out


def seeded_state_dict(spec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Rebuild the random torch state dict a parity fixture describes (``scripts/make_iqa_fixtures.py``).

    ``spec`` holds ``weight_names``, ``weight_shapes`` (JSON), ``weight_mean``, ``weight_std``,
    ``weight_seed`` and ``weight_fp16``: tensor i is ``mean_i + std_i * N(0, 1)`` drawn in order from
    ``numpy.random.default_rng(seed)``, cast to fp32 (and rounded through fp16 if asked).
    """
    import json

    rng = np.random.default_rng(int(spec["weight_seed"]))
    shapes = json.loads(str(spec["weight_shapes"]))
    fp16 = bool(spec["weight_fp16"])
    out: dict[str, np.ndarray] = {}
    for name, shape, mean, std in zip(
        spec["weight_names"], shapes, spec["weight_mean"], spec["weight_std"], strict=True
    ):
        value = np.asarray(mean + std * rng.standard_normal(tuple(shape)), dtype=np.float32)
        out[str(name)] = value.astype(np.float16).astype(np.float32) if fp16 else value
    return out
