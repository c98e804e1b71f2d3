"""Joining a multi-process JAX run: TPU pods, SLURM, or an explicit coordinator.

``adcsr train`` calls :func:`initialize` before anything touches a device. Three cases:

* explicit: ``--coordinator-address HOST:PORT --num-processes N --process-id I`` (or the
  environment variables ``ADCSR_COORDINATOR_ADDRESS``, ``ADCSR_NUM_PROCESSES``,
  ``ADCSR_PROCESS_ID``), for any cluster and for the local launcher (``scripts/launch_local.py``);
* detected: on a multi-host TPU VM slice or inside a multi-task SLURM job, JAX's own cluster
  detection (``jax.distributed.initialize()`` without arguments) finds the coordinator;
* otherwise a single process, nothing to join.

A process that dies must not leave the others hanging in a collective. JAX's coordination
service watches heartbeats: when a worker stops sending them for ``heartbeat_timeout_s`` seconds
(default 60 here, JAX's is 100) every other process is terminated with "Terminating process
because the JAX distributed service detected fatal errors"; when the coordinator (process 0)
dies the others stop at once. Measured on this CPU with a 10 s timeout: 7 s after a worker's
SIGKILL, immediately after the coordinator's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

import jax

log = logging.getLogger(__name__)

ENV_ADDRESS = "ADCSR_COORDINATOR_ADDRESS"
ENV_NUM = "ADCSR_NUM_PROCESSES"
ENV_ID = "ADCSR_PROCESS_ID"
DEFAULT_HEARTBEAT_TIMEOUT_S = 60


class ClusterConfigError(ValueError):
    """The multi-process flags or environment variables are incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How this process joins the run. ``mode``: "explicit", "detected" or "single"."""

    mode: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S


def _int(name: str, value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ClusterConfigError(f"{name} must be an integer, got {value!r}") from None


def detected_cluster(env: Mapping[str, str]) -> str | None:
    """Name of a multi-process cluster environment JAX detects by itself, or None.

    SLURM with more than one task, a multi-host TPU VM slice (``TPU_WORKER_HOSTNAMES`` lists
    several workers), Open MPI with more than one rank.
    """
    if (_int("SLURM_NTASKS", env.get("SLURM_NTASKS")) or 0) > 1:
        return "slurm"
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return "tpu"
    if (_int("OMPI_COMM_WORLD_SIZE", env.get("OMPI_COMM_WORLD_SIZE")) or 0) > 1:
        return "mpi"
    return None


def resolve(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> Cluster:
    """Flags first, then ``ADCSR_*`` variables, then JAX's cluster detection, else one process."""
    env = os.environ if env is None else env
    address = coordinator_address or env.get(ENV_ADDRESS) or None
    num = num_processes if num_processes is not None else _int(ENV_NUM, env.get(ENV_NUM))
    pid = process_id if process_id is not None else _int(ENV_ID, env.get(ENV_ID))
    given = {
        "--coordinator-address": address,
        "--num-processes": num,
        "--process-id": pid,
    }
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ClusterConfigError(
                f"multi-process run needs all of --coordinator-address, --num-processes and "
                f"--process-id (or {ENV_ADDRESS}, {ENV_NUM}, {ENV_ID}); missing: "
                + ", ".join(missing)
            )
        if num < 1 or not 0 <= pid < num:
            raise ClusterConfigError(
                f"--process-id must be in [0, --num-processes), got {pid} of {num}"
            )
        if ":" not in address:
            raise ClusterConfigError(f"--coordinator-address must be HOST:PORT, got {address!r}")
        return Cluster("explicit", address, num, pid, heartbeat_timeout_s)
    if detected_cluster(env):
        return Cluster("detected", heartbeat_timeout_s=heartbeat_timeout_s)
    return Cluster("single", heartbeat_timeout_s=heartbeat_timeout_s)


def initialize(cluster: Cluster) -> None:
    """Join the run described by ``cluster`` (no-op for a single process)."""
    if cluster.mode == "single":
        return
    if cluster.mode == "explicit":
        jax.distributed.initialize(
            cluster.coordinator_address,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            heartbeat_timeout_seconds=cluster.heartbeat_timeout_s,
        )
    else:
        jax.distributed.initialize(heartbeat_timeout_seconds=cluster.heartbeat_timeout_s)
    log.info(
        "joined a %d-process run as process %d (%d local / %d global devices); if another "
        "process dies this one stops within %d s",
        jax.process_count(),
        jax.process_index(),
        jax.local_device_count(),
        jax.device_count(),
        cluster.heartbeat_timeout_s,
    )
