"""The one training loop, for every stage: mesh, input, model, shard, update, checkpoint, evals.

Written in the style of big_vision's ``train.py`` (one readable function, banner sections) and
the flax examples: the stage (``adcsr_jax.train.stage.Stage``) supplies ``init``, ``step``,
``evaluate`` and ``export``; everything else happens here, the same on one CPU, on simulated
devices and on many hosts:

* mesh ``(data, fsdp, tensor)`` from ``config.mesh``; the state placed with the stage's
  shardings, each process building only its own shards; the batch over ``(data, fsdp)``;
* the step wrapped with the NaN/inf guard, ``jax.jit`` with in/out shardings and donation of the
  state, lowered and compiled once ahead of time (XLA's cost analysis gives FLOPs per device);
* orbax checkpoints (``checkpoint.py``) every ``checkpoint.every_steps``, at the end and on
  SIGTERM / a preemption sync point; automatic resume from ``<workdir>/checkpoints``;
* metrics on process 0: CLU writers (console + TensorBoard) and ``<workdir>/metrics.jsonl``,
  means over ``log.every_steps``, steps/s, images/s, TFLOP/s per device, peak memory;
  ``ReportProgress`` (ETA); the stage's ``evaluate`` every ``eval.every_steps``;
* at the end the stage's ``export`` on process 0 while the others wait at a barrier.

Workdir::

    config.json          the resolved config of the latest start
    checkpoints/<step>/  orbax: train (state["train"]), meta (step, rng, mesh), data (per process)
    metrics.jsonl        one JSON object per logged step (process 0; a resume drops lines past
                         the restored step), also eval scalars and compile/* (XLA's estimate)
    tensorboard/         CLU writer event files (config.log.tensorboard)
    sample_images/       the bundled photos, when config.data.source == "sample"
    <stage exports>      whatever the stage's export writes (e.g. student/)

RNG: ``init`` gets ``init_rng(seed)``; step ``s`` (1-based, the number of updates after it)
gets ``step_rng(train_key(seed), s)``; the train key is stored in each checkpoint.
Metrics of step ``s`` are read back to the host while step ``s + 1`` runs (one step behind), so
the host never stalls the device.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from adcsr_jax import sharding as shd
from adcsr_jax import writers
from adcsr_jax.train import checkpoint as ckpt_lib
from adcsr_jax.train.config import flatten
from adcsr_jax.train.stage import Stage

log = logging.getLogger(__name__)

GUARDED_PREFIXES = ("loss/", "grad_norm/")
METRICS_FILE = "metrics.jsonl"


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient norm."""


@dataclasses.dataclass
class TrainResult:
    """What ``train`` did: the last step reached, why it stopped, what it wrote."""

    step: int
    stopped: str  # "done", "sigterm", "preemption", "export_only"
    workdir: Path
    start_step: int = 0  # the checkpoint resumed from (0: a fresh run)
    exported: list[Path] = dataclasses.field(default_factory=list)
    skipped_steps: int = 0
    flops_per_device: float | None = None
    last_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def init_rng(seed: int) -> jax.Array:
    """The key ``Stage.init`` receives."""
    return jax.random.fold_in(jax.random.key(seed), 0)


def train_key(seed: int) -> jax.Array:
    """The base key of the steps (stored in checkpoints)."""
    return jax.random.fold_in(jax.random.key(seed), 1)


def step_rng(key: jax.Array, step: int | jax.Array) -> jax.Array:
    """The key of step ``step`` (1-based)."""
    return jax.random.fold_in(key, step)


def create_writer(logdir: Path | None, just_logging: bool) -> writers.MetricWriter:
    """Console, plus TensorBoard under ``logdir`` (None: console only); needs no TensorFlow."""
    return writers.create_writer(logdir, just_logging=just_logging)


def load_stage(name: str) -> Callable[[ml_collections.ConfigDict, jax.sharding.Mesh], Stage]:
    """``"stage2"`` -> ``adcsr_jax.train.stage2.build``; a dotted path -> ``<module>.build``."""
    module_name = name if "." in name else f"adcsr_jax.train.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"config.stage={name!r}: cannot import {module_name} ({e})") from e
    if not hasattr(module, "build"):
        raise ValueError(f"config.stage={name!r}: {module_name} has no build(config, mesh)")
    return module.build


# --------------------------------------------------------------------------- input
def local_rows(mesh: jax.sharding.Mesh, global_batch: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of a global batch that this process's devices hold."""
    slices = shd.batch_sharding(mesh, 1).addressable_devices_indices_map((global_batch,))
    rows = sorted({r for idx in slices.values() for r in range(*idx[0].indices(global_batch))})
    if rows != list(range(rows[0], rows[0] + len(rows))):
        raise ValueError(
            f"this process's devices hold rows {rows} of the global batch, not one block; "
            "data.order='global' needs each process's devices adjacent on the (data, fsdp) axes"
        )
    return rows[0], rows[-1] + 1


def make_input(
    config: ml_collections.ConfigDict, workdir: Path, mesh: jax.sharding.Mesh | None = None
) -> Iterator[dict[str, Any]]:
    """The resumable host iterator of ``config.data`` (numpy batches, placed by the loop)."""
    from adcsr_jax.data.pipeline import DataIterator, PipelineConfig  # noqa: PLC0415

    d = config.data
    spec = str(d.source)
    order = str(d.get("order", "host"))
    if order == "global" and not spec.startswith("paired:"):
        raise ValueError(
            f"config.data.order='global' is implemented for paired:LR_DIR:HR_DIR sources, not"
            f" {spec!r}; use data.order='host'"
        )
    if spec.startswith("paired:"):
        from adcsr_jax.data.paired import PairedFolderIterator  # noqa: PLC0415

        lr_dir, sep, hr_dir = spec[len("paired:") :].partition(":")
        if not sep:
            raise ValueError(f"config.data.source={spec!r}: expected paired:LR_DIR:HR_DIR")
        return PairedFolderIterator(
            lr_dir,
            hr_dir,
            batch_size=d.batch_size,
            crop=d.crop,
            scale=d.scale,
            flip=d.flip,
            seed=config.seed,
            output_dtype=d.output_dtype,
            num_workers=d.num_workers,
            order=order,
            row_offset=(
                local_rows(mesh, int(d.batch_size))[0]
                if mesh is not None and order == "global"
                else None
            ),
        )
    if spec in ("sample", "sample:train"):
        split = "all" if spec == "sample" else "train"
        name = "sample_images" if split == "all" else "sample_images_train"
        spec = os.fspath(_sample_images(workdir / name, split))
    pipeline = PipelineConfig(
        batch_size=d.batch_size,
        crop=d.crop,
        flip=d.flip,
        seed=config.seed,
        degradation=d.degradation,
        pool_size=None if d.pool_size is None or d.pool_size < 0 else d.pool_size,
        output_dtype=d.output_dtype,
        prefetch=d.prefetch,
        num_workers=d.num_workers,
    )
    return DataIterator(spec, pipeline)


def _sample_images(dest: Path, split: str = "all") -> Path:
    """The bundled sample photos (``split``: ``all`` or ``train``, all but the held-out ones),
    written once (atomically: concurrent hosts may race)."""
    if dest.is_dir():
        return dest
    from adcsr_jax.data.sample_set import write_sample_images  # noqa: PLC0415

    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{jax.process_index()}")
    write_sample_images(tmp, split)
    try:
        tmp.rename(dest)
    except OSError:  # another process was first
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return dest


def restore_data_state(data: Any, states: dict[str, dict[str, Any]], step: int) -> None:
    """This process's iterator state from a checkpoint; another topology restarts the stream
    (at the same global step) unless the order is global (``data.order``: then it is unchanged)."""
    mine = states.get(str(jax.process_index()))
    if mine is not None and mine.get("process_count", jax.process_count()) == jax.process_count():
        data.set_state(mine)
        return
    first = states[min(states, key=int)]
    if first.get("order") == "global" and getattr(data, "order", None) == "global":
        data.set_state(first)
        log.info(
            "checkpoint data states are for %d processes, this run has %d: data.order is"
            " global, so the sample order is unchanged (global step %d)",
            len(states),
            jax.process_count(),
            step,
        )
        return
    log.warning(
        "checkpoint data states are for %d processes, this run has %d: the sample order changes"
        " (the pipeline continues from global step %d)",
        len(states),
        jax.process_count(),
        step,
    )
    fresh = data.get_state()
    fresh.update(step=int(step), bad_count=0)
    fresh.pop("pool_origin", None)
    fresh.pop("pool_ptr", None)
    data.set_state(fresh)


# --------------------------------------------------------------------------- update
def guarded_step(stage_step: Callable) -> Callable:
    """The stage's step under the NaN/inf guard, with the step's key derived inside the jit.

    When any ``loss/*`` or ``grad_norm/*`` metric is not finite the old ``state["train"]`` is
    kept (``jnp.where`` over the tree) and ``guard/skipped`` is 1.
    """

    def guarded_train_step(state, batch, step_index, key_data):
        rng = step_rng(jax.random.wrap_key_data(key_data), step_index)
        new_state, metrics = stage_step(state, batch, rng)
        guarded = [v for k, v in metrics.items() if k.startswith(GUARDED_PREFIXES)]
        finite = (
            jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in guarded])) if guarded else True
        )
        finite = jnp.asarray(finite)
        train = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), new_state["train"], state["train"]
        )
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        metrics["guard/skipped"] = 1.0 - finite.astype(jnp.float32)
        return {**new_state, "train": train}, metrics

    return guarded_train_step


# --------------------------------------------------------------------------- shared with `adcsr plan`
def config_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The mesh of ``config.mesh`` over the first ``num_devices`` devices (-1: all)."""
    m = config.mesh
    devices = jax.devices()[: m.num_devices] if m.num_devices > 0 else None
    return shd.make_mesh(m.data, m.fsdp, m.tensor, devices=devices)


def check_batch_split(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """The global batch must split evenly over the (data, fsdp) devices it is placed on."""
    split = int(mesh.shape["data"]) * int(mesh.shape["fsdp"])
    batch = int(config.data.batch_size)
    if batch % split:
        raise ValueError(
            f"config.data.batch_size={batch} does not split over the mesh's data x fsdp = "
            f"{split} devices ({dict(mesh.shape)}); give a multiple of {split}, or fewer "
            "devices with --config.mesh.num_devices=N (or mesh.data / mesh.tensor)"
        )


def check_state(stage: Stage, state: Any, source: str) -> None:
    """``state`` must be ``{"train", "frozen"}`` (the contract of ``stage.py``)."""
    if not isinstance(state, dict) or set(state) != {"train", "frozen"}:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{stage.name}.{source} must return {{'train', 'frozen'}}, got {got}")


def abstract_state(stage: Stage, seed: int) -> Any:
    """The state as ``ShapeDtypeStruct`` s, allocating nothing: ``stage.shapes()``, else
    ``jax.eval_shape(stage.init, init_rng(seed))`` (which needs an ``init`` that traces)."""
    if stage.shapes is not None:
        shapes = stage.shapes()
        source = "shapes"
    else:
        try:
            shapes = jax.eval_shape(stage.init, init_rng(seed))
        except jax.errors.TracerArrayConversionError as e:
            raise ValueError(
                f"{stage.name}.init converts traced arrays to numpy, so jax.eval_shape cannot"
                " run it; give the stage a shapes() (adcsr_jax/train/stage.py)"
            ) from e
        source = "init"
    check_state(stage, shapes, source)
    return jax.tree.map(_host_tree, shapes)


def state_shardings(stage: Stage, shapes: Any) -> Any:
    """``stage.shardings(shapes)``, checked to mirror the state's tree."""
    shardings = stage.shardings(shapes)
    if jax.tree.structure(shapes) != jax.tree.structure(shardings):
        raise ValueError(f"{stage.name}.shardings returned a tree unlike the state's")
    return shardings


def jit_step(stage: Stage, shardings: Any, mesh: jax.sharding.Mesh) -> Any:
    """The guarded step under ``jax.jit``: ``(state, batch, step, key_data) -> (state, metrics)``
    with the state's shardings in and out, donated; the batch keeps its own (``place_batch``)."""
    repl = shd.replicated(mesh)
    state_sh = {"train": shardings["train"], "frozen": shardings["frozen"]}
    return jax.jit(
        guarded_step(stage.step),
        in_shardings=(state_sh, None, repl, repl),
        out_shardings=(state_sh, repl),
        donate_argnums=(0,),
    )


def jit_prepare(stage: Stage, mesh: jax.sharding.Mesh) -> Any:
    """The stage's per-batch program under ``jax.jit``, or None: ``(frozen, batch) -> {key:
    array}`` with every output sharded on its leading (batch) axis over ``(data, fsdp)``, as
    ``place_batch`` shards the host's batch and as ``adcsr plan`` assumes the step receives it
    (a constraint, so the layout does not depend on what XLA propagates from the inputs)."""
    if stage.prepare is None:
        return None

    def prepare(frozen: Any, batch: Any) -> dict[str, jax.Array]:
        out = stage.prepare(frozen, batch)
        size = next(iter(batch.values())).shape[0]
        for k, v in out.items():  # static shapes: checked once, at trace time
            if v.ndim == 0 or v.shape[0] != size:
                raise ValueError(
                    f"{stage.name}.prepare returned {k!r} of shape {tuple(v.shape)}: batch"
                    f" entries lead with the batch size {size}"
                )
        return {
            k: jax.lax.with_sharding_constraint(v, shd.batch_sharding(mesh, v.ndim))
            for k, v in out.items()
        }

    return jax.jit(prepare)


def compiled_flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends have no cost model
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def compiled_memory(compiled: Any) -> dict[str, float]:
    """XLA's per-device memory estimate of the compiled step (bytes), where the backend has one."""
    try:
        mem = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    fields = ("argument", "output", "temp", "alias", "generated_code")
    out = {}
    for f in fields:
        v = getattr(mem, f"{f}_size_in_bytes", None)
        if v is not None:
            out[f"compile/{f}_bytes"] = float(v)
    return out


def _peak_memory() -> tuple[str, float]:
    """``("memory/peak_device_bytes", max over local devices)``, else the host's peak RSS."""
    peaks = []
    for d in jax.local_devices():
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"])
    if peaks:
        return "memory/peak_device_bytes", float(max(peaks))
    return "memory/peak_host_rss_bytes", float(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ) * 1024


def _host_tree(x: Any) -> Any:
    if hasattr(x, "shape") and hasattr(x, "dtype"):  # arrays, numpy scalars, ShapeDtypeStructs
        return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


# --------------------------------------------------------------------------- metrics on host
class _Metrics:
    """Per-step host accounting: the guard's counts and means over the log interval."""

    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.sums: dict[str, float] = {}
        self.count = 0
        self.skipped_total = 0
        self.skipped_interval = 0
        self.in_a_row = 0

    def add(self, step: int, m: dict[str, float]) -> None:
        if m.get("guard/skipped", 0.0) > 0.5:
            bad = sorted(
                k for k, v in m.items() if k.startswith(GUARDED_PREFIXES) and not math.isfinite(v)
            )
            self.skipped_total += 1
            self.skipped_interval += 1
            self.in_a_row += 1
            log.warning(
                "step %d: non-finite %s; update skipped (%d in a row, %d in all)",
                step,
                ", ".join(bad),
                self.in_a_row,
                self.skipped_total,
            )
            if self.in_a_row >= self.max_in_a_row:
                raise NonFiniteError(
                    f"step {step}: {self.in_a_row} steps in a row had a non-finite"
                    f" {', '.join(bad)} (config.max_nonfinite_in_a_row={self.max_in_a_row});"
                    " stopping the run"
                )
            return
        self.in_a_row = 0
        self.count += 1
        for k, v in m.items():
            if k != "guard/skipped":
                self.sums[k] = self.sums.get(k, 0.0) + v

    def take(self) -> dict[str, float]:
        out = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        out["guard/skipped_in_interval"] = float(self.skipped_interval)
        out["guard/skipped_total"] = float(self.skipped_total)
        self.sums, self.count, self.skipped_interval = {}, 0, 0
        return out


class _Jsonl:
    """``<workdir>/metrics.jsonl``: one JSON object per logged step (process 0)."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():  # drop what a killed run wrote past it
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            path.write_text("".join(f"{line}\n" for line in kept))
        self._f = path.open("a")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        rec = {"step": step, **{k: v for k, v in scalars.items() if math.isfinite(v)}}
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    """The records of ``<workdir>/metrics.jsonl``."""
    path = Path(workdir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _StopFlag:
    """SIGTERM sets a flag; the loop saves at the next step boundary and returns.

    Installed for the whole of ``train`` (setup and compilation included). Python runs the
    handler as soon as the main thread is back in Python (a compile or a wait for the device
    returns first); the flag is read after every step, so a signal during a long step or the
    compilation stops the run at the next boundary, never mid-step and never lost.
    Multi-process runs leave SIGTERM to JAX's preemption notifier instead: every process asks
    ``reached_preemption_sync_point(step)`` after each step and all stop at the same step.
    """

    def __init__(self):
        self.signal: int | None = None
        self._previous = None

    def __enter__(self) -> _StopFlag:
        # Multi-process runs leave SIGTERM to JAX's preemption notifier (all hosts must agree on
        # the step: reached_preemption_sync_point); a signal handler needs the main thread.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum
        log.warning("SIGTERM: saving a checkpoint at the next step boundary")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# --------------------------------------------------------------------------- the loop
def train(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    stage: Stage | None = None,
    export_only: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Runs (or resumes) ``config`` in ``workdir`` until ``config.total_steps``.

    ``stage``: a built stage (default: ``load_stage(config.stage)(config, mesh)``).
    ``export_only``: restore the latest checkpoint, export, return.
    ``on_step(step, metrics)``: called on every process with each step's host metrics.
    Raises ``NonFiniteError`` after ``config.max_nonfinite_in_a_row`` skipped steps in a row.
    """
    with _StopFlag() as stop:  # from the start: a SIGTERM during setup or compilation counts too
        return _train(config, Path(workdir), stop, stage, export_only, on_step)


def _train(
    config: ml_collections.ConfigDict,
    workdir: Path,
    stop: _StopFlag,
    stage: Stage | None,
    export_only: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")

    # ----------------------------------------------------------------------- mesh
    mesh = config_mesh(config)
    check_batch_split(config, mesh)
    log.info("mesh %s on %d processes", dict(mesh.shape), jax.process_count())

    # ----------------------------------------------------------------------- model
    if stage is None:
        stage = load_stage(config.stage)(config, mesh)
    host_state = stage.init(init_rng(config.seed))
    check_state(stage, host_state, "init")

    # ----------------------------------------------------------------------- shard
    shapes = jax.tree.map(_host_tree, host_state)
    shardings = state_shardings(stage, shapes)
    repl = shd.replicated(mesh)
    frozen = shd.place(host_state.pop("frozen"), shardings["frozen"])  # host copy freed as placed

    # ----------------------------------------------------------------------- checkpoint
    ck = config.checkpoint
    checkpoints = ckpt_lib.Checkpoints(
        workdir / "checkpoints",
        keep_last=ck.keep_last,
        keep_every=ck.keep_every,
        asynchronous=ck.asynchronous,
    )
    start = checkpoints.latest_step()
    key = train_key(config.seed)
    data_states, meta = None, {}
    if start is not None:
        target = ckpt_lib.abstract(shapes["train"], shardings["train"])
        train_state, meta, data_states = checkpoints.restore(start, target)
        key = jax.random.wrap_key_data(np.asarray(meta["rng"], np.uint32))
        log.info(
            "resumed from step %d (written on mesh %s, %s processes)",
            start,
            meta.get("mesh"),
            meta.get("process_count"),
        )
    elif export_only:
        raise FileNotFoundError(f"--export-only: no checkpoint in {workdir / 'checkpoints'}")
    else:
        train_state = shd.place(host_state.pop("train"), shardings["train"])
    del host_state
    state = {"train": train_state, "frozen": frozen}
    key_data = jax.device_put(jax.random.key_data(key), repl)
    start = start or 0

    if export_only:
        exported = _export(stage, state, workdir, mesh)
        checkpoints.close()
        return TrainResult(start, "export_only", workdir, start, exported)

    # ----------------------------------------------------------------------- input
    data = make_input(config, workdir, mesh)
    if data_states is not None:
        restore_data_state(data, data_states, start)
    batch_keys = tuple(stage.batch_keys)

    def next_batch() -> dict[str, jax.Array]:
        host = next(data)
        missing = [k for k in batch_keys if k not in host]
        if missing:
            raise KeyError(
                f"{stage.name} reads batch keys {missing}; the input pipeline gives {sorted(host)}"
            )
        return shd.place_batch({k: host[k] for k in batch_keys}, mesh)

    # ----------------------------------------------------------------------- update
    jitted = jit_step(stage, shardings, mesh)
    prepare = jit_prepare(stage, mesh)

    # ----------------------------------------------------------------------- metrics, evals
    writer = create_writer(
        workdir / "tensorboard" if config.log.tensorboard else None, just_logging=not is_main
    )
    jsonl = _Jsonl(workdir / METRICS_FILE, start) if is_main else None
    if is_main and start == 0:
        writer.write_hparams({**flatten(config), **dict(stage.hparams)})
    total = int(config.total_steps)
    # Imported here, after adcsr_jax.writers made clu.metric_writers importable without TF.
    from clu import periodic_actions  # noqa: PLC0415

    report = periodic_actions.ReportProgress(
        num_train_steps=total, writer=writer, every_steps=config.log.every_steps
    )
    host_metrics = _Metrics(config.max_nonfinite_in_a_row)
    host_metrics.skipped_total = int(meta.get("skipped_total", 0))  # carried over on resume
    global_batch = int(config.data.batch_size)

    def write(step: int, scalars: dict[str, float]) -> None:
        writer.write_scalars(step, scalars)
        if jsonl is not None:
            jsonl.write(step, scalars)

    def evaluate(step: int) -> None:
        if stage.evaluate is None:
            return
        with report.timed("eval"):
            scalars, images = stage.evaluate(state, step, workdir)
        if scalars:
            write(step, {k: float(v) for k, v in scalars.items()})
        if images and is_main:
            writer.write_images(
                step,
                {k: (v if np.ndim(v) == 4 else np.asarray(v)[None]) for k, v in images.items()},
            )

    def save(step: int) -> None:
        states = ckpt_lib.gather_process_states(data.get_state())
        meta = {
            "rng": np.asarray(jax.random.key_data(key)).tolist(),
            "mesh": {k: int(v) for k, v in mesh.shape.items()},
            "process_count": jax.process_count(),
            "stage": stage.name,
            "skipped_total": host_metrics.skipped_total,
        }
        with report.timed("checkpoint"):
            checkpoints.save(step, state["train"], meta, states)

    # ----------------------------------------------------------------------- loop
    flops = None
    step = start
    stopped = "done"
    last: dict[str, float] = {}
    t_log, steps_in_log = time.perf_counter(), 0
    pending: tuple[int, dict[str, jax.Array]] | None = None
    compiled = None

    def process(step: int, metrics: dict[str, jax.Array]) -> None:
        nonlocal t_log, steps_in_log, last
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        host_metrics.add(step, values)
        if on_step is not None:
            on_step(step, values)
        report(step)
        steps_in_log += 1
        if step % config.log.every_steps == 0 or step == total:
            now = time.perf_counter()
            rate = steps_in_log / max(now - t_log, 1e-9)
            scalars = host_metrics.take()
            scalars["perf/steps_per_sec"] = rate
            scalars["perf/images_per_sec"] = rate * global_batch
            if flops is not None:
                scalars["perf/tflops_per_device"] = flops * rate / 1e12
            name, peak = _peak_memory()
            scalars[name] = peak
            write(step, scalars)
            last = scalars
            t_log, steps_in_log = now, 0

    try:
        while step < total:
            step += 1
            batch = next_batch()
            if prepare is not None:  # the stage's per-batch program (its own jit, not donated)
                batch = {**batch, **prepare(state["frozen"], batch)}
            step_arg = jax.device_put(np.int32(step), repl)
            if compiled is None:
                compiled = jitted.lower(state, batch, step_arg, key_data).compile()
                flops = compiled_flops(compiled)
                plan = compiled_memory(compiled)
                if flops is not None:
                    plan["compile/flops_per_device"] = flops
                log.info("step compiled (per device): %s", plan)
                if plan:
                    write(step, plan)
                t_log = time.perf_counter()
            state, metrics = compiled(state, batch, step_arg, key_data)
            if pending is not None:
                process(*pending)
            pending = (step, metrics)
            if stop.signal is not None:
                stopped = "sigterm"
            elif ckpt_lib.reached_preemption(step):
                stopped = "preemption"
            if stopped != "done" or step % ck.every_steps == 0 or step == total:
                process(*pending)  # its counts go into the checkpoint, its log line first
                pending = None
                save(step)
            if stopped != "done":
                log.warning("stopping at step %d (%s); checkpoint written", step, stopped)
                break
            if config.eval.every_steps and step % config.eval.every_steps == 0:
                evaluate(step)
        if pending is not None:
            process(*pending)
            pending = None
        checkpoints.wait()
        exported: list[Path] = []
        if stopped == "done":
            if config.eval.at_end and not (
                config.eval.every_steps and step % config.eval.every_steps == 0
            ):
                evaluate(step)
            if config.export_at_end:
                exported = _export(stage, state, workdir, mesh)
    finally:
        checkpoints.close()
        writer.flush()
        writer.close()
        if jsonl is not None:
            jsonl.close()
        close = getattr(data, "close", None)
        if close is not None:
            close()
    return TrainResult(
        step, stopped, workdir, start, exported, host_metrics.skipped_total, flops, last
    )


# --------------------------------------------------------------------------- export
def _export(stage: Stage, state: dict[str, Any], workdir: Path, mesh: jax.sharding.Mesh) -> list:
    """The stage's export on process 0; the others wait at a barrier."""
    if stage.export is None:
        return []
    if jax.process_count() > 1:  # make every shard addressable on process 0 (a collective)
        state = jax.jit(lambda s: s, out_shardings=shd.replicated(mesh))(state)
    paths = list(stage.export(state, workdir)) if jax.process_index() == 0 else []
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("adcsr_export")
    for p in paths:
        log.info("exported %s", p)
    return paths
