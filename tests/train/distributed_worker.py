"""One process of the dying-process test (``tests/train/test_distributed.py``); not a test module.

Joins the run through ``adcsr_jax.train.distributed`` (``ADCSR_*`` variables set by
``scripts/launch_local.py``), then runs a jitted global reduction every 10 ms. The process whose
id is ``DIE_PROCESS`` kills itself (``os._exit(9)``, like a SIGKILL) after ``DIE_AFTER`` steps.
"""

from __future__ import annotations

import os
import time

import jax


def main() -> None:
    from adcsr_jax.train import distributed

    cluster = distributed.resolve(heartbeat_timeout_s=int(os.environ["HEARTBEAT_S"]))
    distributed.initialize(cluster)
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((jax.device_count(),), ("d",))
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))
    die, after = int(os.environ["DIE_PROCESS"]), int(os.environ["DIE_AFTER"])
    for step in range(100_000):
        x = jax.make_array_from_process_local_data(
            NamedSharding(mesh, PartitionSpec("d")), jnp.ones((jax.local_device_count(),))
        )
        assert float(total(x)) == jax.device_count()
        if step == after:
            print(f"STEP {step} t={time.time():.3f}", flush=True)
            if cluster.process_id == die:
                os._exit(9)
        time.sleep(0.01)


if __name__ == "__main__":
    main()
