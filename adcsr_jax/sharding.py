"""The device mesh (axes ``data``, ``fsdp``, ``tensor``) and placement of host batches on it.

``jax.make_mesh`` defaults to Explicit axis types in jax 0.10; this project shards with
``jax.jit`` in/out shardings and logical-axis rules, so the mesh is built with Auto axes.
Batches are global ``jax.Array``s sharded over ``('data', 'fsdp')`` on their leading axis; each
host contributes its local slice (``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def make_mesh(
    data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh with Auto axis types; one axis may be -1 (= the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(
            f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}"
        )
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices are not divisible by {known} (mesh {sizes})")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}"
        )
    return jax.make_mesh(tuple(sizes), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading axis over ``('data', 'fsdp')``, the other ``ndim - 1`` axes replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def place_batch(batch: Mapping[str, Any] | np.ndarray, mesh: Mesh) -> Any:
    """Host-local numpy batch (a dict or an array) -> global arrays sharded over the batch axes.

    Every host passes its own slice; the global leading size is ``local * process_count``.
    """

    def one(x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("place_batch needs arrays with a leading batch axis, got a scalar")
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    if isinstance(batch, Mapping):
        return {k: one(v) for k, v in batch.items()}
    return one(batch)
