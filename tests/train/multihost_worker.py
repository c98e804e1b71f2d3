"""One host of the two-process test (``tests/train/test_multihost.py``); not a test module.

Usage (repo root on ``PYTHONPATH``): ``python multihost_worker.py COORDINATOR PROCESS_ID NUM_PROCESSES IMAGE_DIR STEPS``.
Joins ``jax.distributed``, builds the global mesh, draws ``STEPS`` stage-2 batches from the
data pipeline as global sharded arrays, reduces them with a jitted global computation and prints
one JSON line: what this host loaded and what every host must agree on.
"""

from __future__ import annotations

import json
import sys

import jax


def main() -> None:
    coordinator, pid, nproc, image_dir, steps = sys.argv[1:6]
    jax.distributed.initialize(coordinator, num_processes=int(nproc), process_id=int(pid))
    import jax.numpy as jnp
    import numpy as np

    from adcsr_jax.data.pipeline import DataIterator, PipelineConfig
    from adcsr_jax.sharding import make_mesh
    from adcsr_jax.testing.degradation import cheap_preset

    mesh = make_mesh(data=-1, fsdp=2)
    cfg = PipelineConfig(batch_size=2 * jax.device_count(), crop=32, degradation=None, prefetch=1)
    it = DataIterator(image_dir, cfg, mesh=mesh, degradation=cheap_preset(pool_size=4))
    everywhere = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())  # replicated
    per_image = jax.jit(lambda x: x.mean(axis=(1, 2, 3)), out_shardings=everywhere)
    total = jax.jit(jnp.sum, out_shardings=everywhere)
    out = {"process_index": jax.process_index(), "files": [int(f) for f in it.files], "steps": []}
    for _ in range(int(steps)):
        batch = next(it)
        gt, lq = batch["gt"], batch["lr"]
        local = [np.asarray(s.data).mean(axis=(1, 2, 3)).tolist() for s in gt.addressable_shards]
        out["steps"].append(
            {
                "global_shape": list(gt.shape),
                "lq_shape": list(lq.shape),
                "spec": str(gt.sharding.spec),
                "gt_means": np.asarray(per_image(gt)).tolist(),  # gathered: the same on every host
                "lq_sum": float(total(lq)),
                "local_means": local,
            }
        )
    state = it.get_state()
    it.close()
    out["state_step"] = state["step"]
    print("RESULT " + json.dumps(out), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
