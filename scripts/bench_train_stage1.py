"""Benchmark: the full-size stage-1 step (half-decoder pretraining), Flax against torch.

Full-size networks with random weights: SD 2.1 VAE encoder (128/256/512/512), the half decoder
(64/128/256/256) pruned from SD's, taming's PatchGAN (3 layers, 64 filters), LPIPS-VGG; batch 1,
256 x 256 crops, fp32, disc_start 0 (the whole GAN path). The torch step is the test's reference
(``adcsr_jax.testing.torch_stage1.TorchStage1``: latent-diffusion's formulas, diffusers and
taming modules).
Each implementation runs in its own subprocess, alternating ``--repeats`` times, so the peak RSS
(``ru_maxrss``) is its own; s/step is the median over ``--steps`` steps after one warm-up step
(the compile, reported separately for Flax).

    cd REPO && flock /tmp/adcsr-heavy.lock env PYTHONPATH=$PWD \
        .venv/bin/python scripts/bench_train_stage1.py --steps 3 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)

REPO = Path(__file__).resolve().parents[1]


def config(crop: int, batch: int):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_c", REPO / "configs" / "stage1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("full")
    c.model.sd_vae = ""  # random full-size SD VAE
    c.loss.lpips_weights = "random"
    c.loss.disc_start = 0
    c.data.batch_size = batch
    c.data.crop = crop
    c.optim.micro_batches = 1
    c.eval.dir = ""
    return c


def batch_array(crop: int, batch: int):
    import numpy as np

    return np.random.default_rng(0).uniform(0, 1, (batch, crop, crop, 3)).astype(np.float32)


def run_flax(args) -> dict:
    import jax
    import jax.numpy as jnp

    from adcsr_jax.sharding import make_mesh
    from adcsr_jax.train import stage1

    c = config(args.crop, args.batch)
    stage = stage1.build(c, make_mesh(devices=jax.devices()[:1]))
    state = stage.init(jax.random.key(0))
    gt = {"gt": jnp.asarray(batch_array(args.crop, args.batch))}
    step = jax.jit(stage.step, donate_argnums=0)
    t0 = time.perf_counter()
    state, m = step(state, gt, jax.random.key(0))
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        state, m = step(state, gt, jax.random.key(i + 1))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    flops = None
    try:
        cost = jax.jit(stage.step).lower(state, gt, jax.random.key(0)).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", 0.0)) or None
    except Exception:  # noqa: BLE001 - cost analysis is optional
        pass
    return {"impl": "flax", "s_per_step": statistics.median(times), "first_step_s": compile_s,
            "flops_per_step": flops, "loss_rec": float(m["loss/rec"])}  # fmt: skip


def run_torch(args) -> dict:
    import torch
    from taming.modules.discriminator.model import NLayerDiscriminator, weights_init

    from adcsr_jax.testing.torch_stage1 import TorchStage1, adcsr_torch_decoder, sd_autoencoder
    from adcsr_jax.train import stage1

    torch.set_num_threads(os.cpu_count() or 1)
    c = config(args.crop, args.batch)
    vae = sd_autoencoder((128, 256, 512, 512))  # weights drawn by torch
    vae.decoder = None  # stage 1 never runs SD's decoder
    vae.requires_grad_(False)
    disc = NLayerDiscriminator(3, 64, 3).apply(weights_init)
    ref = TorchStage1(vae, adcsr_torch_decoder((64, 128, 256, 256)), disc,
                      stage1.random_lpips_vgg(0), c.loss, stage1.learning_rate(c))  # fmt: skip
    gt = batch_array(args.crop, args.batch)
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        z = ref.latents(gt)
        out = ref.g_step(gt, i, z)
        ref.d_step(gt, i, z)
        times.append(time.perf_counter() - t0)
    return {"impl": "torch", "s_per_step": statistics.median(times[1:]),
            "first_step_s": times[0], "loss_rec": out["loss/rec"]}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", choices=["flax", "torch"], help="run one implementation here")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    if args.impl:
        os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
        result = (run_flax if args.impl == "flax" else run_torch)(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    rows = []
    for _ in range(args.repeats):
        for impl in ("flax", "torch"):
            cmd = [sys.executable, __file__, "--impl", impl, "--crop", str(args.crop),
                   "--batch", str(args.batch), "--steps", str(args.steps)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not line:
                print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
                return 1
            rows.append(json.loads(line[0][len("RESULT ") :]))
            print(json.dumps(rows[-1]), flush=True)
    for impl in ("flax", "torch"):
        r = [x for x in rows if x["impl"] == impl]
        s = statistics.median(x["s_per_step"] for x in r)
        rss = max(x["peak_rss_mb"] for x in r)
        print(f"{impl:5s}: {s:8.2f} s/step  peak RSS {rss:8.0f} MB  (batch {args.batch}, "
              f"{args.crop}^2, fp32)")  # fmt: skip
    f = statistics.median(x["s_per_step"] for x in rows if x["impl"] == "flax")
    t = statistics.median(x["s_per_step"] for x in rows if x["impl"] == "torch")
    print(f"flax / torch time: {f / t:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
