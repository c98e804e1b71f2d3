"""What a training stage hands the loop: plain functions over plain pytrees, no class hierarchy.

The loop (``adcsr_jax.train.loop``) owns the mesh, the input pipeline, jit with shardings and
donation, checkpoints, metric writers, the NaN guard and resume. A stage module
(``stage1.py``, ``stage2.py``) exposes ``build(config, mesh) -> Stage`` and supplies only what is
particular to it.

State layout (a dict, every leaf a ``jax.Array`` once placed)::

    {"train":  what changes and is checkpointed (trainable params, optimizer states, EMA, ...),
     "frozen": what never changes (teacher, SD VAE, discriminator base weights, LPIPS, ...);
               rebuilt by ``init`` on restore, never written to a checkpoint}

``step(state, batch, rng) -> (state, metrics)`` is pure and jittable. ``metrics`` is a flat dict
of float32 scalars: loss terms under ``loss/...``, gradient norms under ``grad_norm/...``, learning
rates under ``lr/...``, anything else under its own prefix. The loop's NaN guard keeps the old
``state["train"]`` whenever any ``loss/`` or ``grad_norm/`` entry is not finite.
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
        process (it may use collectives); scalars are floats, images are uint8 NHWC grids keyed by
        name. ``None`` when the config has no validation set.
      export: ``(state, workdir) -> list[Path]`` writes the trained network(s) in the formats
        users load (called by process 0 at the end of training and by ``adcsr train --export``).
    """

    name: str
    init: Callable[[jax.Array], State]
    shardings: Callable[[Any], Any]
    step: Callable[[State, Batch, jax.Array], tuple[State, Metrics]]
    batch_keys: tuple[str, ...]
    evaluate: Callable[[State, int, Path], tuple[dict[str, float], dict[str, Any]]] | None = None
    export: Callable[[State, Path], list[Path]] | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
