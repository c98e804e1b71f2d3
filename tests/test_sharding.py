"""The mesh helper: axis names and types, -1 inference, batch placement over ('data', 'fsdp')."""

from __future__ import annotations

import gc
import weakref

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

from adcsr_jax.sharding import make_mesh, place, place_batch, replicated


def test_make_mesh_axes_and_auto_types():
    mesh = make_mesh(data=-1, fsdp=2, tensor=1)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": jax.device_count() // 2, "fsdp": 2, "tensor": 1}
    assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_make_mesh_rejects_bad_sizes():
    with pytest.raises(ValueError, match="at most one"):
        make_mesh(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="needs"):
        make_mesh(data=3, fsdp=1, tensor=1)


def test_place_batch_shards_leading_axis():
    mesh = make_mesh(data=-1, fsdp=2)
    n = jax.device_count()
    batch = {"gt": np.arange(n * 2 * 4 * 4 * 3, dtype=np.float32).reshape(n * 2, 4, 4, 3)}
    out = place_batch(batch, mesh)["gt"]
    assert out.shape == batch["gt"].shape
    np.testing.assert_array_equal(np.asarray(out), batch["gt"])
    shard_rows = {s.data.shape[0] for s in out.addressable_shards}
    assert shard_rows == {2}  # split over all data x fsdp devices
    assert out.sharding.spec[0] == ("data", "fsdp")


class _HostLeaf:
    """A host leaf that records which earlier leaves were still alive when it was converted."""

    def __init__(self, value: float, earlier: list[weakref.ref], alive: list[int]):
        self.value, self.earlier, self.alive = value, earlier, alive

    def __array__(self, dtype=None, copy=None):
        gc.collect()
        self.alive.append(sum(r() is not None for r in self.earlier))
        return np.full((4,), self.value, np.float32)


def test_place_drops_each_host_leaf_once_placed():
    """``place(state.pop(...))`` frees the host tree leaf by leaf (no 2x host peak): when a
    leaf is converted, no earlier host leaf is alive any more."""
    mesh = make_mesh(devices=jax.devices()[:1])
    refs: list[weakref.ref] = []
    alive: list[int] = []

    def host_tree() -> dict[str, _HostLeaf]:
        tree = {}
        for i in range(3):
            tree[f"w{i}"] = _HostLeaf(float(i), list(refs), alive)
            refs.append(weakref.ref(tree[f"w{i}"]))
        return tree

    out = place(host_tree(), {f"w{i}": replicated(mesh) for i in range(3)})
    assert alive == [0, 0, 0]
    assert [float(out[f"w{i}"][0]) for i in range(3)] == [0.0, 1.0, 2.0]
