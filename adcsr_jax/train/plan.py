"""The memory and compute plan of a stage's training step, compiled ahead of time: ``adcsr plan``.

The step is lowered and compiled exactly as ``loop.train`` does it (``loop.config_mesh``,
``loop.abstract_state``, ``loop.state_shardings``, ``loop.jit_step``), but for abstract inputs:
the state is ``jax.ShapeDtypeStruct`` s carrying the stage's shardings (``Stage.shapes`` or
``jax.eval_shape(stage.init)``) and the batch is the shapes ``config.data`` would produce, so no
weight or image is read. On simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``) this gives, per device, what XLA's SPMD
partitioner makes of the configured mesh (the JAX AOT API, ``jit(...).lower(...).compile()``):

* parameter / optimizer-state bytes from the shardings (each leaf's shard shape);
* argument, output, temporary (activations and scratch) and aliased bytes from
  ``compiled.memory_analysis()``; ``peak_bytes = argument + output - alias + temp``;
* FLOPs (and bytes accessed) per step from ``compiled.cost_analysis()``, which counts a loop
  body once: ``loop_trip_counts`` lists the loops' trip counts (the ``grad_accum`` scan, and
  chunked attention's query loops, ``attention_query_chunk``: plan without chunking to count
  the step's FLOPs, which chunking does not change);
* the operand bytes of every collective in the compiled HLO (all-reduce, all-gather,
  reduce-scatter, all-to-all, collective-permute; async ``*-start`` forms included). Each
  instruction is counted once: a collective inside a loop body (``lax.scan`` accumulation) runs
  once per iteration, so multiply by the trip count there.

CPU temporaries are an estimate: XLA:GPU and XLA:TPU schedule and fuse differently. ``adcsr
plan`` compiles with XLA:CPU's memory-minimising scheduler
(``--xla_cpu_enable_concurrency_optimized_scheduler=false``, ``adcsr_jax.cli.plan.PLAN_FLAGS``):
the default concurrency-optimised one keeps independent branches alive at once and tripled the
temporaries of the full-size student's forward and backward (and hid what remat saves).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from adcsr_jax import sharding as shd
from adcsr_jax.train import loop
from adcsr_jax.train.stage import Stage

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "s32": 4, "u32": 4,
    "s64": 8, "u64": 8, "f16": 2, "bf16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16,
    "token": 0,
}  # fmt: skip
_DEF = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s=\s(.*)$")
_OP = re.compile(r"(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_NAME = re.compile(r"%([\w.\-]+)")
_SHAPE = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9][a-z0-9]*)?)\[([0-9,]*)\]")


def _dtype_bytes(name: str) -> float:
    if name in _DTYPE_BYTES:
        return _DTYPE_BYTES[name]
    if name.startswith("f8"):
        return 1
    raise ValueError(f"unknown HLO element type {name!r}")


def _type_bytes(text: str) -> int:
    """Bytes of an HLO type such as ``f32[8,3]{1,0}`` or ``(f32[3]{0}, bf16[])``."""
    return int(
        sum(
            math.prod(int(d) for d in dims.split(",") if d) * _dtype_bytes(dt)
            for dt, dims in _SHAPE.findall(text)
        )
    )


def _split_type(rest: str) -> tuple[str, str]:
    """``"TYPE op(...)..."`` -> ``(TYPE, "op(...)...")``; TYPE may be a parenthesised tuple."""
    if not rest.startswith("("):
        head, _, tail = rest.partition(" ")
        return head, tail
    depth = 0
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return rest[: i + 1], rest[i + 1 :].lstrip()
    return rest, ""


def collective_bytes(hlo_text: str) -> dict[str, dict[str, int]]:
    """``{op: {"count", "bytes"}}``: operand bytes per device of each collective in ``hlo_text``.

    Operands are printed by name, so every instruction's result type is looked up first (HLO
    names are unique in a module).
    """
    types: dict[str, str] = {}
    calls: list[tuple[str, list[str]]] = []
    for line in hlo_text.splitlines():
        m = _DEF.match(line)
        if m is None:
            continue
        type_text, body = _split_type(m.group(2))
        types[m.group(1)] = type_text
        op = _OP.match(body)
        if op is not None:
            depth, i = 1, op.end()
            while i < len(body) and depth:  # the operand list, up to its closing parenthesis
                depth += {"(": 1, ")": -1}.get(body[i], 0)
                i += 1
            calls.append((op.group(1), _NAME.findall(body[op.end() : i - 1])))
    out = {op: {"count": 0, "bytes": 0} for op in COLLECTIVES}
    for op, operands in calls:
        out[op]["count"] += 1
        out[op]["bytes"] += sum(_type_bytes(types.get(name, "")) for name in operands)
    return out


_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def loop_trip_counts(hlo_text: str) -> list[int]:
    """Trip counts of the ``while`` loops in ``hlo_text`` (``lax.scan`` accumulation) that XLA
    knows; XLA's cost analysis counts each loop body once, whatever its trip count."""
    return [
        int(m.group(1))
        for line in hlo_text.splitlines()
        if " while(" in line and (m := _TRIP.search(line))
    ]


def batch_shapes(
    config: ml_collections.ConfigDict, batch_keys: tuple[str, ...], mesh: jax.sharding.Mesh
) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch ``config.data`` yields, as sharded ``ShapeDtypeStruct`` s (no data read)."""
    d = config.data
    b, crop = int(d.batch_size), int(d.crop)
    dtype = np.dtype(d.output_dtype)
    sizes = {"gt": crop}
    if str(d.source).startswith("paired:"):
        sizes["lr"] = crop // int(d.scale)
    elif d.degradation is not None:
        from adcsr_jax.data.degradations import get_preset  # noqa: PLC0415

        preset = get_preset(d.degradation)
        size = preset.train_crop or crop
        sizes = {"gt": size, "lr": size if preset.resize_back else size // preset.scale}
        if preset.usm_gt:
            sizes["gt_usm"] = size
    missing = [k for k in batch_keys if k not in sizes]
    if missing:
        raise ValueError(
            f"the stage reads batch keys {missing}; config.data (source={d.source!r},"
            f" degradation={d.degradation!r}) gives {sorted(sizes)}"
        )
    sharding = shd.batch_sharding(mesh, 4)
    return {
        k: jax.ShapeDtypeStruct((b, sizes[k], sizes[k], 3), dtype, sharding=sharding)
        for k in batch_keys
    }


def _batch_struct(x: jax.ShapeDtypeStruct, mesh: jax.sharding.Mesh) -> jax.ShapeDtypeStruct:
    """A batch entry's shape, sharded on its leading axis as the loop's batches are."""
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shd.batch_sharding(mesh, x.ndim))


def _is_opt(path: tuple) -> bool:
    key = getattr(path[0], "key", None) if path else None
    return isinstance(key, str) and key.startswith("opt")


def _network_name(path: tuple, tree: Mapping[str, Any]) -> str:
    """Top-level key; a top-level ``params`` dict of dicts is split into its networks."""
    top = path[0].key
    params = tree.get("params")
    nets = isinstance(params, Mapping) and all(isinstance(v, Mapping) for v in params.values())
    if top == "params" and len(path) > 1 and nets:
        return f"params/{path[1].key}"
    return str(top)


def _shard_bytes(x: jax.ShapeDtypeStruct, sharding: Any) -> int:
    return int(math.prod(sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize)


def memory_by_role(shapes: Any, shardings: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Per-device bytes of trainable / optimizer / frozen leaves, and every network's counts."""
    totals = {"trainable_bytes": 0, "optimizer_bytes": 0, "frozen_bytes": 0}
    networks: dict[tuple[str, str], dict[str, Any]] = {}
    for part in ("train", "frozen"):
        leaves = jax.tree_util.tree_leaves_with_path(shapes[part])
        shs = jax.tree.leaves(shardings[part])
        for (path, x), sh in zip(leaves, shs, strict=True):
            nbytes = _shard_bytes(x, sh)
            role = "frozen" if part == "frozen" else ("optimizer" if _is_opt(path) else "trainable")
            totals[f"{role}_bytes"] += nbytes
            if role == "optimizer" or not path:
                continue
            name = _network_name(path, shapes[part])
            net = networks.setdefault(
                (role, name), {"name": name, "role": role, "params": 0, "bytes_per_device": 0}
            )
            net["params"] += int(math.prod(x.shape))
            net["bytes_per_device"] += nbytes
    return totals, list(networks.values())


@dataclasses.dataclass
class CompiledStep:
    """The loop's jitted step compiled for abstract inputs: ``compiled(state, batch, step,
    key_data)`` also runs on real arrays placed with ``shardings`` / ``batch``'s shardings."""

    stage: Stage
    mesh: jax.sharding.Mesh
    shapes: Any  # the state as ShapeDtypeStructs (no shardings)
    shardings: Any  # the state's NamedShardings
    batch: dict[str, jax.ShapeDtypeStruct]
    compiled: Any


def compile_step(config: ml_collections.ConfigDict, *, stage: Stage | None = None) -> CompiledStep:
    """Lowers and compiles the configured step as ``loop.train`` would, from shapes only."""
    mesh = loop.config_mesh(config)
    if stage is None:
        stage = loop.load_stage(config.stage)(config, mesh)
    shapes = loop.abstract_state(stage, config.seed)
    shardings = loop.state_shardings(stage, shapes)
    repl = shd.replicated(mesh)
    state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings
    )
    batch = batch_shapes(config, tuple(stage.batch_keys), mesh)
    if stage.prepare is not None:  # what the loop's per-batch program adds to the step's batch
        extra = jax.eval_shape(stage.prepare, shapes["frozen"], batch)
        batch = {**batch, **{k: _batch_struct(v, mesh) for k, v in extra.items()}}
    step = jax.ShapeDtypeStruct((), np.int32, sharding=repl)
    key = jax.eval_shape(lambda: jax.random.key_data(loop.train_key(0)))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=repl)
    compiled = loop.jit_step(stage, shardings, mesh).lower(state, batch, step, key).compile()
    return CompiledStep(stage, mesh, shapes, shardings, batch, compiled)


def plan(
    config: ml_collections.ConfigDict,
    *,
    stage: Stage | None = None,
    compiled_step: CompiledStep | None = None,
) -> dict[str, Any]:
    """Compiles the configured step for abstract inputs (or takes ``compiled_step``) and returns
    its per-device plan."""
    c = compiled_step or compile_step(config, stage=stage)
    stage, mesh, shapes, shardings, batch = c.stage, c.mesh, c.shapes, c.shardings, c.batch
    compiled = c.compiled

    per_device, networks = memory_by_role(shapes, shardings)
    xla = {k.removeprefix("compile/"): int(v) for k, v in loop.compiled_memory(compiled).items()}
    per_device.update(xla)
    if {"argument_bytes", "output_bytes", "temp_bytes"} <= set(xla):
        per_device["peak_bytes"] = (
            xla["argument_bytes"] + xla["output_bytes"] - xla.get("alias_bytes", 0)
        ) + xla["temp_bytes"]
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
    hlo = compiled.as_text()
    collectives = collective_bytes(hlo)
    return {
        "stage": stage.name,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "devices": int(mesh.size),
        "platform": mesh.devices.flat[0].platform,
        "global_batch": int(config.data.batch_size),
        "batch": {k: [list(v.shape), str(v.dtype)] for k, v in batch.items()},
        "per_device": per_device,
        "flops_per_device": float(cost["flops"]) if "flops" in cost else None,
        "bytes_accessed_per_device": (
            float(cost["bytes accessed"]) if "bytes accessed" in cost else None
        ),
        "loop_trip_counts": loop_trip_counts(hlo),
        "collectives": collectives,
        "collective_bytes_per_device": sum(c["bytes"] for c in collectives.values()),
        "networks": networks,
        "params": {
            "trainable": sum(n["params"] for n in networks if n["role"] == "trainable"),
            "frozen": sum(n["params"] for n in networks if n["role"] == "frozen"),
        },
    }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else str(n)


def format_plan(p: Mapping[str, Any]) -> str:
    """The plan as the text ``adcsr plan`` prints."""
    mesh = " x ".join(f"{k} {v}" for k, v in p["mesh"].items())
    batch = ", ".join(f"{k} {tuple(s)} {dt}" for k, (s, dt) in p["batch"].items())
    lines = [
        f"stage {p['stage']} on {p['devices']} {p['platform']} devices (mesh {mesh}),"
        f" global batch {p['global_batch']}: {batch}",
        "per device:",
    ]
    labels = {
        "trainable_bytes": "trainable parameters",
        "optimizer_bytes": "optimizer states",
        "frozen_bytes": "frozen parameters",
        "argument_bytes": "arguments (XLA)",
        "output_bytes": "outputs (XLA)",
        "alias_bytes": "donated, aliased (XLA)",
        "temp_bytes": "temporaries / activations (XLA)",
        "generated_code_bytes": "generated code (XLA)",
        "peak_bytes": "peak = arguments + outputs - aliased + temporaries",
    }
    for k, label in labels.items():
        if k in p["per_device"]:
            lines.append(f"  {label:<52} {_size(p['per_device'][k]):>12}")
    if p["flops_per_device"] is not None:
        lines.append(f"  {'FLOPs per step':<52} {p['flops_per_device']:>12.4g}")
    if p.get("loop_trip_counts"):
        loops = ", ".join(
            f"{n} of {trips}" for trips, n in sorted(Counter(p["loop_trip_counts"]).items())
        )
        lines.append(
            f"    (XLA counts each loop body once; loops (count of trips): {loops}. A micro-batch"
            " loop's FLOPs and collectives run that many times; chunked attention's query loops"
            " undercount its FLOPs the same way: plan with --config.attention_query_chunk=0 for"
            " the step's FLOPs)"
        )
    lines.append(
        f"  {'collectives per step (operand bytes)':<52}"
        f" {_size(p['collective_bytes_per_device']):>12}"
    )
    for op, c in p["collectives"].items():
        if c["count"]:
            lines.append(f"    {op:<50} {_size(c['bytes']):>12}  ({c['count']} ops)")
    lines.append(
        f"parameters: {_count(p['params']['trainable'])} trainable,"
        f" {_count(p['params']['frozen'])} frozen"
    )
    for n in p["networks"]:
        lines.append(
            f"  {n['role']:<9} {n['name']:<40} {_count(n['params']):>10}"
            f"  {_size(n['bytes_per_device']):>12} per device"
        )
    return "\n".join(lines)
