#!/usr/bin/env python
"""XLA:CPU memory estimate of one part of the full-size stage-2 step, compiled alone.

A full-step ``adcsr plan`` takes ~9 minutes here; one part takes about one. Parts (per device,
``--batch`` images, shapes from ``stage2.build(...).shapes()``, no weights read):

* ``student``: ``f_S`` forward + backward (gradient of ``mean f_S`` w.r.t. the student);
* ``disc``: D on a feature map, forward + backward w.r.t. D's trainable params and the map;
* ``teacher``: ``f_T`` (OSEDiff one step + half-decoder stem), forward only;
* ``real``: ``f_R`` (SD VAE encoder on the HR crop + stem), forward only;
* ``prompt``: DAPE tags -> SD 2.1's text encoder, forward only.

Run it with the flags ``adcsr plan`` uses, e.g.::

    XLA_FLAGS="--xla_cpu_enable_concurrency_optimized_scheduler=false \\
      --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true" \\
      flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/plan_components.py student --batch 4

Measured here (memory-minimising scheduler, ``configs/stage2.py:full``: bf16 compute, remat):
student 2.67 GiB of temporaries at batch 1 (4.17 with ``--config.remat=False``; 8.45 with
XLA:CPU's default concurrency-optimised scheduler), 10.83 GiB at batch 4; disc 6.78 GiB at batch
2; teacher 1.92 GiB at batch 2.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("student", "disc", "teacher", "real", "prompt")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("part", choices=PARTS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--config", default=str(ROOT / "configs" / "stage2.py") + ":full")
    args, extra = ap.parse_known_args()

    import jax
    import jax.numpy as jnp

    from adcsr_jax.sharding import make_mesh
    from adcsr_jax.train import stage2
    from adcsr_jax.train.config import load_config

    config = load_config(args.config, extra)
    shapes = stage2.build(config, make_mesh(devices=jax.devices()[:1])).shapes()
    weights = stage2.abstract_weights(config)
    width = weights.teacher_config.unet.cross_attention_dim
    nets = stage2.build_nets(config, weights, stage2.abstract_prompt(config, width))
    b, f32 = args.batch, jnp.float32
    lq = jax.ShapeDtypeStruct((b, 128, 128, 3), f32)
    gt = jax.ShapeDtypeStruct((b, 512, 512, 3), f32)
    text = jax.ShapeDtypeStruct((b, 77, width), f32)
    feat = jax.ShapeDtypeStruct((b, 64, 64, nets.student.feature_channels), f32)
    train, frozen = shapes["train"], shapes["frozen"]

    def disc_grads(d, fr, x, t):
        loss = lambda d, x: jnp.mean(stage2.disc_logits(nets, d, fr, x, t))  # noqa: E731
        return jax.grad(loss, argnums=(0, 1))(d, x)

    fn, inputs = {
        "student": (
            lambda s, x: jax.grad(lambda s: jnp.mean(stage2.student_features(nets, s, x)))(s),
            (train["student"], lq),
        ),
        "disc": (disc_grads, (train["disc"], frozen, feat, text)),
        "teacher": (lambda fr, x, t: stage2.teacher_features(nets, fr, x, t), (frozen, lq, text)),
        "real": (lambda fr, x: stage2.real_features(nets, fr, x), (frozen, gt)),
        "prompt": (lambda fr, x: stage2.batch_prompts(nets, fr, x)[0], (frozen, lq)),
    }[args.part]
    t0 = time.perf_counter()
    mem = jax.jit(fn).lower(*inputs).compile().memory_analysis()
    print(json.dumps({"part": args.part, "batch": b, "extra": extra,
                      "temp_gib": round(mem.temp_size_in_bytes / 2**30, 3),
                      "argument_gib": round(mem.argument_size_in_bytes / 2**30, 3),
                      "compile_s": round(time.perf_counter() - t0, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
