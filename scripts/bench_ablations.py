#!/usr/bin/env python
"""Table B.1's three students side by side: parameters, XLA FLOPs and latency, LR 128 -> SR 512.

Rows (AdcSR supplement Table B.1; configs/ablations.py): ``bksdm`` (BK-SDM-v2-Small blocks +
half decoder), ``taesd`` (channel-pruned UNet + TAESD's tiny decoder), ``chpruned`` (AdcSR).
Full-size networks with random weights, batch 1, the student's whole inference path
(``AdcSR.__call__``: network, colour fix, clamp), jitted; each row in its own subprocess (its own
peak RSS). FLOPs: ``compiled.cost_analysis()`` (2 per multiply-add plus elementwise work).
The paper's order: the tiny decoder fastest (0.02 s vs 0.03 s on its GPU), the other two close.

Heavy (a full-size compile per row; minutes each on a shared 2-core CPU)::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_ablations.py --out bench_ablations.json
    .venv/bin/python scripts/bench_ablations.py --dtype bfloat16      # e.g. on a GPU
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

from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)

ROWS = {
    "bksdm": {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 1,
              "unet_mid_block": False},
    "taesd": {"decoder_type": "taesd"},
    "chpruned": {},
}  # fmt: skip
PAPER = {"bksdm": (457, 0.03), "taesd": (444, 0.02), "chpruned": (456, 0.03)}


def run_row(row: str, args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, count_params, init_student

    config = AdcSRConfig(
        dtype=args.dtype,
        attention_query_chunk=args.attention_chunk or None,
        conv_matmul_max_pixels=args.conv_matmul_pixels or None,
        **ROWS[row],
    )
    _, params = init_student(config)
    if args.dtype != "float32":
        params = jax.tree.map(lambda x: x.astype(jnp.dtype(args.dtype)), params)
    module = AdcSR(config)
    fn = jax.jit(lambda p, x: module.apply({"params": p}, x))
    lr = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, args.size, args.size, 3)),
                     jnp.float32)  # fmt: skip
    t0 = time.perf_counter()
    compiled = fn.lower(params, lr).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, list | tuple) else (cost or {})
    times = []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        compiled(params, lr).block_until_ready()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return {
        "row": row,
        "params": count_params(params),
        "paper_params_M": PAPER[row][0],
        "paper_time_s": PAPER[row][1],
        "gflops": float(cost.get("flops", float("nan"))) / 1e9,
        "compile_s": compile_s,
        "latency_s_median": statistics.median(times),
        "latency_s_min": min(times),
        "platform": jax.devices()[0].platform,
        "dtype": args.dtype,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--size", type=int, default=128, help="LR side (SR is 4x)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--attention-chunk", type=int, default=512)
    p.add_argument("--conv-matmul-pixels", type=int, default=256)
    p.add_argument("--out", default="")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_row(args.one, args)))
        return
    results = []
    for row in args.rows.split(","):
        argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k not in ("out", "one", "rows")]  # fmt: skip
        out = subprocess.run([sys.executable, __file__, *argv, "--one", row], env=os.environ,
                             capture_output=True, text=True, check=True)  # fmt: skip
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{row:<9} {r['params'] / 1e6:8.2f}M (paper {r['paper_params_M']}M) "
              f"{r['gflops']:9.1f} GFLOP  {r['latency_s_median'] * 1e3:9.1f} ms median "
              f"(paper {r['paper_time_s']} s)  compile {r['compile_s']:.0f} s", flush=True)  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
