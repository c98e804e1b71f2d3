"""Every orbax call of the project: atomic, asynchronous training checkpoints with exact resume.

One checkpoint (``<workdir>/checkpoints/<step>/``) has three items:

* ``train``: ``state["train"]`` (orbax ``StandardSave``: each process writes its own shards);
* ``meta``: JSON, the step, the base RNG key data, the mesh shape and process count it was
  written with;
* ``data``: JSON, *every* process's data-iterator state keyed by process index (gathered to all
  processes before the save, written by the primary one), so each host resumes its own stream.

Atomicity is orbax's: a step is written under ``<step>.orbax-checkpoint-tmp-*`` and renamed when
complete, so a save cut short by a kill is never listed (``latest_step`` ignores it and
``cleanup_tmp_directories`` removes it on the next start). Restoring takes the *current* mesh's
shardings (``ShapeDtypeStruct`` s with ``sharding``), so a checkpoint written on 8 devices loads
on 4, or on another ``fsdp`` split. Retention: the last ``keep_last`` plus every step divisible by
``keep_every``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

ITEMS = ("train", "meta", "data")


def gather_process_states(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """This process's JSON-able ``state`` -> ``{str(process_index): state}`` of all processes.

    A collective: every process must call it at the same point.
    """
    if jax.process_count() == 1:
        return {str(jax.process_index()): state}
    blob = np.frombuffer(json.dumps(state).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([blob.size], np.int64))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: blob.size] = blob
    every = multihost_utils.process_allgather(padded)  # (process_count, max_len)
    return {
        str(i): json.loads(bytes(every[i, : int(sizes[i][0])]).decode())
        for i in range(jax.process_count())
    }


def reached_preemption(step: int) -> bool:
    """JAX's preemption sync point (multi-process runs with a coordination service)."""
    if jax.process_count() == 1:
        return False
    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # no preemption sync manager (jax.distributed not initialised)
        return False


def abstract(tree: Any, shardings: Any) -> Any:
    """Arrays / shapes + shardings -> ``ShapeDtypeStruct`` s that restore onto those shardings."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


class Checkpoints:
    """The run's ``CheckpointManager`` (``<workdir>/checkpoints``)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        keep_last: int = 3,
        keep_every: int = 0,
        asynchronous: bool = True,
    ):
        self.directory = Path(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep_last if keep_last > 0 else None,
            keep_period=keep_every if keep_every > 0 else None,
            enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint (half-written ones are never listed)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(
        self,
        step: int,
        train: Any,
        meta: dict[str, Any],
        data_states: dict[str, dict[str, Any]],
    ) -> bool:
        """Starts the save of ``step`` (returns once arrays are copied off the devices)."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                train=ocp.args.StandardSave(train),
                meta=ocp.args.JsonSave({"step": step, **meta}),
                data=ocp.args.JsonSave(data_states),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_train: Any) -> tuple[Any, dict, dict]:
        """``(train, meta, data_states)`` of ``step``, ``train`` placed as ``abstract_train`` says."""
        got = self._manager.restore(
            step,
            args=ocp.args.Composite(
                train=ocp.args.StandardRestore(abstract_train),
                meta=ocp.args.JsonRestore(),
                data=ocp.args.JsonRestore(),
            ),
        )
        return got["train"], dict(got["meta"]), dict(got["data"])

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
