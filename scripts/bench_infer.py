#!/usr/bin/env python
"""Benchmark inference on this CPU: AdcSR student (Flax fp32 / bf16, PyTorch) and OSEDiff teacher.

Full-size networks with random weights, LR 128x128 -> SR 512x512, batch 1, all in one run. Each
measurement runs in its own subprocess so its peak RSS is its own:

* ``flax``: the student's whole inference path (network + colour fix + clamp), jitted, fp32;
  also XLA's cost analysis (FLOPs) of the compiled function; saves its output for the bf16 check.
* ``flax-bf16``: the same with compute dtype bfloat16 and params cast to bf16 once; PSNR of its
  output against the fp32 output.
* ``torch``: the same network built from diffusers modules with AdcSR's recipe (pruned on the
  ``meta`` device, so no 866M-param SD UNet is materialised), ``torch.no_grad``, fp32.
* ``teacher``: OSEDiff in Flax (bicubic x4, VAE encoder mean, UNet at t=999 with a 77x1024 text
  context, closed-form z0, VAE decoder), fp32, with its FLOPs.
* ``teacher-torch``: the same with diffusers' UNet2DConditionModel and AutoencoderKL.
* ``matmul-peak``: fp32 and bf16 GFLOP/s of one large matmul in XLA and PyTorch (can bf16 win?).

The Flax parts run with the exact CPU fast paths that ``adcsr infer`` uses on CPU
(``--attention-chunk 512 --conv-matmul-pixels 256``; 0 turns one off).

Heavy (up to ~6 GB per process, ~20 min on a shared 2-core machine)::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_infer.py --out bench_infer.json

Hand-counted MACs for comparison (conv/linear MACs, attention matmuls in brackets): student
495.0 G [+54.5 G]; OSEDiff encoder 541.1 G [+17.2], UNet 339.1 G [+63.0], decoder 1240.1 G [+17.2].
XLA's ``flops`` counts 2 per multiply-add plus elementwise work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)

PARTS = ("torch", "flax", "flax-bf16", "teacher", "teacher-torch", "matmul-peak")
HAND_MACS = {"student": (495.0, 54.5), "teacher": (541.1 + 339.1 + 1240.1, 17.2 + 63.0 + 17.2)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _lr(size: int):
    import numpy as np

    return np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)


def _time(fn, iters: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) or None


def bench_flax(args: argparse.Namespace, bf16: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, init_student

    config = AdcSRConfig.tiny() if args.tiny else AdcSRConfig.full()
    config = config.replace(
        attention_query_chunk=args.attention_chunk or None,
        conv_matmul_max_pixels=args.conv_matmul_pixels or None,
    )
    t0 = time.perf_counter()
    _, params = init_student(config)
    if bf16:
        config = config.replace(dtype="bfloat16")
        params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    init_s = time.perf_counter() - t0
    module = AdcSR(config)
    lr = jnp.asarray(_lr(args.size))
    t0 = time.perf_counter()
    compiled = jax.jit(lambda p, x: module.apply({"params": p}, x)).lower(params, lr).compile()
    compile_s = time.perf_counter() - t0
    out = {}
    times = _time(lambda: out.__setitem__("y", compiled(params, lr).block_until_ready()),
                  args.iters, args.warmup)  # fmt: skip
    y = np.asarray(out["y"], np.float32)
    result = {"init_s": init_s, "compile_s": compile_s, "times_s": times,
              "flops": _flops(compiled), "shape": list(y.shape)}  # fmt: skip
    if not bf16:
        np.save(args.ref_out, y)
    elif Path(args.ref_out).is_file():
        ref = np.load(args.ref_out)
        mse = float(np.mean((y - ref) ** 2))
        result["psnr_vs_fp32_db"] = float("inf") if mse == 0 else -10 * np.log10(mse)
        result["max_abs_vs_fp32"] = float(np.abs(y - ref).max())
    return result


def bench_torch(args: argparse.Namespace) -> dict:
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.autoencoders.vae import Decoder

    from adcsr_jax.testing import reference as ref
    from adcsr_jax.testing import torch_adcsr as T

    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet_cfg = T.TINY_SD_UNET_CONFIG if args.tiny else ref.SD21_UNET_CONFIG
    dec_cfg = T.TINY_HALF_DECODER_CONFIG if args.tiny else T.HALF_DECODER_CONFIG
    with torch.device("meta"):
        sd = UNet2DConditionModel(**{k: v for k, v in unet_cfg.items() if not k.startswith("_")})
    net, tail = T.build_torch_student(sd, Decoder(**dec_cfg).eval())
    del sd
    init_s = time.perf_counter() - t0
    lr = ref.nchw(_lr(args.size))
    with torch.no_grad():
        times = _time(lambda: T.torch_student_infer(net, tail, lr), args.iters, args.warmup)
    return {"init_s": init_s, "times_s": times, "threads": torch.get_num_threads()}


def bench_teacher(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from adcsr_jax.models.adcsr import random_params
    from adcsr_jax.models.osediff import OSEDiff, OSEDiffConfig, abstract_params

    config = (OSEDiffConfig.tiny if args.tiny else OSEDiffConfig.full)(half_decoder=False)
    config = config.with_fast_paths(args.attention_chunk or None, args.conv_matmul_pixels or None)
    t0 = time.perf_counter()
    params = random_params(abstract_params(config))
    init_s = time.perf_counter() - t0
    module = OSEDiff(config)
    lr = jnp.asarray(_lr(args.size))
    dim = config.unet.cross_attention_dim
    text = jnp.asarray(np.random.default_rng(1).standard_normal((1, 77, dim), np.float32))
    t0 = time.perf_counter()
    compiled = (
        jax.jit(lambda p, x, c: module.apply({"params": p}, x, c)).lower(params, lr, text).compile()
    )
    compile_s = time.perf_counter() - t0
    times = _time(lambda: compiled(params, lr, text).block_until_ready(), args.iters, args.warmup)
    return {"init_s": init_s, "compile_s": compile_s, "times_s": times, "flops": _flops(compiled)}


def bench_teacher_torch(args: argparse.Namespace) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from adcsr_jax.testing import reference as ref
    from adcsr_jax.testing import torch_adcsr as T

    torch.manual_seed(0)
    t0 = time.perf_counter()
    ucfg = T.TINY_SD_UNET_CONFIG if args.tiny else ref.SD21_UNET_CONFIG
    vcfg = T.TINY_SD_VAE_CONFIG if args.tiny else ref.SD21_VAE_CONFIG
    unet = UNet2DConditionModel(**{k: v for k, v in ucfg.items() if not k.startswith("_")}).eval()
    vae = AutoencoderKL(**{k: v for k, v in vcfg.items() if not k.startswith("_")}).eval()
    init_s = time.perf_counter() - t0
    lr = ref.nchw(_lr(args.size))
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        times = _time(lambda: T.torch_teacher(vae, unet, lr, text), args.iters, args.warmup)
    return {"init_s": init_s, "times_s": times, "threads": torch.get_num_threads()}


def bench_matmul_peak(args: argparse.Namespace) -> dict:
    """GFLOP/s of a (4096 x 960) @ (960 x 960) matmul (the student's level-0 FF shape) in fp32
    and bf16, XLA and PyTorch: whether a bf16 path can beat fp32 on this CPU at all."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    flop = 2 * 4096 * 960 * 960
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4096, 960), np.float32), rng.standard_normal((960, 960), np.float32)
    rates, times = {}, []
    for name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
        x, w = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
        mm = jax.jit(lambda x, w: x @ w)
        t = _time(lambda mm=mm, x=x, w=w: mm(x, w).block_until_ready(), 20, 3)
        times += t if name == "fp32" else []
        rates[f"xla_{name}"] = flop / min(t) / 1e9
        tdtype = torch.float32 if name == "fp32" else torch.bfloat16
        ta, tb = torch.from_numpy(a).to(tdtype), torch.from_numpy(b).to(tdtype)
        with torch.no_grad():
            t = _time(lambda ta=ta, tb=tb: ta @ tb, 20, 3)
        rates[f"torch_{name}"] = flop / min(t) / 1e9
    return {"times_s": times, "gflops": rates}


def run_part(args: argparse.Namespace) -> None:
    fn = {
        "flax": lambda: bench_flax(args, bf16=False),
        "flax-bf16": lambda: bench_flax(args, bf16=True),
        "torch": lambda: bench_torch(args),
        "teacher": lambda: bench_teacher(args),
        "teacher-torch": lambda: bench_teacher_torch(args),
        "matmul-peak": lambda: bench_matmul_peak(args),
    }[args.part]
    result = fn()
    result.update(part=args.part, peak_rss_mb=_peak_rss_mb(),
                  median_s=statistics.median(result["times_s"]))  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)


def summarise(results: dict[str, dict]) -> list[str]:
    lines = []
    med = {k: v["median_s"] for k, v in results.items()}
    for name, r in results.items():
        if "gflops" in r:
            rates = ", ".join(f"{k} {v:.0f}" for k, v in r["gflops"].items())
            lines.append(f"{name:14s} 4096x960x960 matmul GFLOP/s: {rates}")
            continue
        extra = ""
        if r.get("flops"):
            kind = "teacher" if name.startswith("teacher") else "student"
            conv, attn = HAND_MACS[kind]
            extra = (f", XLA {r['flops'] / 1e12:.3f} TFLOP = {r['flops'] / 2e9:.1f} G MAC "
                     f"(hand count {conv:.1f} + {attn:.1f} = {conv + attn:.1f} G)")  # fmt: skip
        if "psnr_vs_fp32_db" in r:
            extra += f", PSNR vs fp32 {r['psnr_vs_fp32_db']:.2f} dB"
        comp = f", compile {r['compile_s']:.1f} s" if "compile_s" in r else ""
        lines.append(f"{name:14s} median {r['median_s']:.3f} s (runs {[round(t, 3) for t in r['times_s']]})"
                     f", peak RSS {r['peak_rss_mb']:.0f} MB{comp}{extra}")  # fmt: skip
    for name in med:
        if name.startswith("flax-bf16") and "torch" in med:
            speedup = med["torch"] / med[name]
            lines.append(f"PyTorch fp32 / {name}: {speedup:.2f}x faster (target >= 2)")
        elif name.startswith("flax") and "torch" in med:
            ratio = med[name] / med["torch"]
            lines.append(f"{name} / PyTorch fp32 student time: {ratio:.2f}x (target <= 1.0)")
    for teacher in ("teacher", "teacher-torch"):
        student = "flax" if teacher == "teacher" else "torch"
        if teacher in med and student in med:
            lines.append(f"{teacher} / {student} student time: {med[teacher] / med[student]:.2f}x")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--size", type=int, default=128, help="LR side (output is 4x)")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="tiny configs (a quick smoke run)")
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    parser.add_argument("--ref-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--attention-chunk", type=int, default=512,
                        help="Flax: exact chunked attention, this many queries at a time (0: off)")  # fmt: skip
    parser.add_argument("--conv-matmul-pixels", type=int, default=256,
                        help="Flax: UNet convs on maps up to this size as one matmul (0: off)")  # fmt: skip
    parser.add_argument(
        "--xla-variants",
        nargs="*",
        default=[],
        help="extra XLA_FLAGS strings: each reruns the flax and flax-bf16 parts with them "
        "(e.g. --xla_cpu_use_onednn=true)",
    )
    args = parser.parse_args()
    if args.part:
        run_part(args)
        return 0
    results: dict[str, dict] = {}
    runs = [(p, "") for p in PARTS if p in args.only]
    runs += [(p, v) for v in args.xla_variants for p in ("flax", "flax-bf16") if p in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        ref_out = os.path.join(tmp, "fp32.npy")
        for part, flags in runs:
            name = f"{part} [{flags}]" if flags else part
            cmd = [sys.executable, __file__, "--part", part, "--size", str(args.size),
                   "--iters", str(args.iters), "--warmup", str(args.warmup), "--ref-out", ref_out]  # fmt: skip
            if args.tiny:
                cmd.append("--tiny")
            cmd += ["--attention-chunk", str(args.attention_chunk),
                    "--conv-matmul-pixels", str(args.conv_matmul_pixels)]  # fmt: skip
            env = dict(os.environ)
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
            print(f"== {name}", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
                print(f"{name} failed (exit {proc.returncode})")
                continue
            results[name] = json.loads(line[len("RESULT ") :])
            print(summarise({name: results[name]})[0], flush=True)
    print("\n".join(["", f"Summary (this CPU, batch 1, LR {args.size} -> {4 * args.size}):",
                     *summarise(results)]))  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if len(results) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
