"""What a training stage hands the loop: plain functions over plain pytrees, no class hierarchy.

The loop (``adcsr_jax.train.loop``) owns the mesh, the input pipeline, jit with shardings and
donation, checkpoints, metric writers, the NaN guard and resume. A stage module
(``stage1.py``, ``stage2.py``) exposes ``build(config, mesh) -> Stage`` and supplies only what is
particular to it.

State layout (a dict with exactly these two keys, every leaf a numeric ``jax.Array`` once
placed; keep PRNG keys as ``jax.random.key_data`` uint32 arrays)::

    {"train":  what changes and is checkpointed (trainable params, optimizer states, EMA, ...),
     "frozen": what never changes (teacher, SD VAE, discriminator base weights, LPIPS, ...);
               rebuilt by ``init`` on restore, never written to a checkpoint}

``step(state, batch, rng) -> (state, metrics)`` is pure and jittable. ``metrics`` is a flat dict
of float32 scalars: loss terms under ``loss/...``, gradient norms under ``grad_norm/...``, learning
rates under ``lr/...``, anything else under its own prefix. The loop's NaN guard keeps the old
``state["train"]`` whenever any ``loss/`` or ``grad_norm/`` entry is not finite, and adds
``guard/skipped``. The loop logs the means of every metric over ``config.log.every_steps``.

Keys: ``init`` receives ``loop.init_rng(config.seed)``; step ``s`` (1-based: the number of
updates once it is done) receives ``loop.step_rng(loop.train_key(config.seed), s)``, derived
inside the jitted step, so a resumed run draws exactly what an uninterrupted one would.

Batches: global arrays sharded over ``('data', 'fsdp')`` on the leading axis, keyed as the input
pipeline names them: ``"gt"`` (HR crops, NHWC float32 in [0, 1]), ``"lr"`` (the degraded LR, when
``config.data.degradation`` is set or the source is ``paired:LR_DIR:HR_DIR``) and ``"gt_usm"``
(presets with ``usm_gt``). Only ``batch_keys`` are placed on the devices.

Optimizer states live in ``state["train"]`` under keys starting with ``opt`` (``"opt"``,
``"opt_disc"``); ``adcsr plan`` counts them apart from the trainable parameters.

Shardings: build them with ``adcsr_jax.sharding``: ``logical_to_sharding(logical_specs, shapes,
mesh, config.sharding.rules)`` for trees with logical names (``adcsr_jax.models.logical_axes``),
``fsdp_shardings(shapes, mesh, config.sharding.fsdp_min_size)`` for the rest (optimizer states,
frozen weights without names).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax

State = dict[str, Any]
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage, as the loop sees it.

    Attributes:
      name: ``"stage1"`` or ``"stage2"`` (used in logs, the workdir and exports).
      init: ``rng -> state`` on the host: loads pretrained weights named in the config (or draws
        random ones for the tiny configs) and builds the optimizer states. Leaves may be numpy
        or jax arrays; the loop places them with ``shardings``.
      shardings: ``state_shapes -> tree of NamedSharding`` for the state (same tree as ``init``'s
        result; the argument is its ``jax.eval_shape`` / ``ShapeDtypeStruct`` tree).
      step: ``(state, batch, rng) -> (state, metrics)``; pure; compiled once by the loop.
      batch_keys: the keys ``step`` reads from the input pipeline's batches (``"gt"``, ``"lq"``).
      evaluate: ``(state, step, workdir) -> (scalars, images)`` on the held-out set, run by every
        process (it may use collectives) every ``config.eval.every_steps`` and at the end
        (``config.eval.at_end``); scalars are floats (written to the metric writers and
        ``metrics.jsonl``), images are uint8 HWC or NHWC grids keyed by name (process 0 writes
        them). ``None`` when the config has no validation set.
      export: ``(state, workdir) -> list[Path]`` writes the trained network(s) in the formats
        users load; called by process 0 only (every leaf is fully addressable there: the loop
        replicates the state first in multi-process runs) at the end of training
        (``config.export_at_end``) and by ``adcsr train --export-only``.
      hparams: extra hyperparameters for the writers' hparams (beside the flattened config).
      shapes: ``() -> state`` of ``jax.ShapeDtypeStruct`` s (the tree ``init`` returns) without
        allocating arrays or reading files: what ``adcsr plan`` compiles the step for. ``None``:
        ``jax.eval_shape(init, rng)``, which works when ``init`` only traces (no numpy
        conversions, no file reads worth avoiding).
      prepare: ``(frozen, batch) -> {key: array}``: pure, jitted by the loop as its own program
        (nothing donated) and run on every placed batch before the step; its entries (leading
        batch axis) join the step's batch. For per-batch work on frozen networks that need not
        be in the step's program (stage 2's prompt embeddings: DAPE tags -> text encoder).
        ``None``: the step gets the input pipeline's batch alone.
    """

    name: str
    init: Callable[[jax.Array], State]
    shardings: Callable[[Any], Any]
    step: Callable[[State, Batch, jax.Array], tuple[State, Metrics]]
    batch_keys: tuple[str, ...]
    evaluate: Callable[[State, int, Path], tuple[dict[str, float], dict[str, Any]]] | None = None
    export: Callable[[State, Path], list[Path]] | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    shapes: Callable[[], State] | None = None
    prepare: Callable[[Any, Batch], dict[str, jax.Array]] | None = None
