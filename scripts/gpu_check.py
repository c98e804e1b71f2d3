#!/usr/bin/env python
"""One prepared check of a lent accelerator (H100 / H200 class): what a GPU session records.

Run by ``scripts/gpu_check.sh`` (same arguments); ``--tiny`` runs every part end to end on a
CPU with the tiny networks (the tests do). Each part runs in its own subprocess, so its peak
device memory is its own; the results are one JSON object (``--out``):

* ``student``: the AdcSR student's inference path (``adcsr_jax.infer.Upscaler``: pad, network,
  AdaIN colour fix, clamp; random full-size weights) at LR 128 -> SR 512 in fp32 and bf16, after
  warm-up: median latency at batch 1, and the batch (doubling from 1 while images/s grows by at
  least 3 % and memory lasts) that maximises images/s; bf16 vs fp32 agreement of the batch-1
  outputs (PSNR in [0, 1], max abs difference).
* ``step``: the full-size stage-2 step (``configs/stage2.py`` preset ``--preset``, random
  full-size networks incl. RAM Swin-L and SD 2.1's text encoder) compiled exactly as the loop
  does (``adcsr_jax.train.plan.compile_step``: ``loop.jit_step``, state donated) at the largest
  per-device batch that fits: XLA:GPU's own memory estimate at batches 1 and 2 gives the
  per-image cost, the largest batch under ``--fit`` of the device's ``bytes_limit`` is compiled
  and run (halved on an out-of-memory error). Records s/step after warm-up, images/s, XLA's
  FLOPs per step, MFU against the datasheet's dense bf16 peak (``--peak-tflops`` or the table
  below), the measured peak device memory beside the compiled estimate and, with
  ``--cpu-plan``, beside ``adcsr plan``'s CPU estimate of the same configuration.
* ``degradation``: the ``adcsr`` Real-ESRGAN degradation (``adcsr_jax.data.degradations``) of
  one step's batch of 512 crops on the device, host parameter sampling and device programs
  (every bucket compiled first), and its share of a step: ``degrade / (degrade + step)``.

Datasheet dense bf16 tensor-core peaks (NVIDIA H100 / H200 SXM datasheets: 989 TFLOP/s; A100:
312 TFLOP/s); a name not in the table gives MFU ``null`` unless ``--peak-tflops`` is passed.

Usage on a lent GPU (jax with CUDA installed)::

    scripts/gpu_check.sh --out gpu_check.json
    scripts/gpu_check.sh --tiny --out /tmp/gpu_check_tiny.json     # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # the bench_* helpers beside this file

from bench_infer import _lr, _time  # noqa: E402

PARTS = ("student", "step", "degradation")
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "GH200": 989.4, "A100": 312.0}
FULL_LR, TINY_LR = 128, 16


def _device() -> dict[str, Any]:
    import jax

    d = jax.devices()[0]
    stats = d.memory_stats() if hasattr(d, "memory_stats") else None
    return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count(),
            "bytes_limit": (stats or {}).get("bytes_limit"), "jax": jax.__version__}  # fmt: skip


def _peak_bytes() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use")


def _is_oom(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def peak_tflops(kind: str, override: float | None) -> float | None:
    """Dense bf16 peak of ``kind`` (``jax.Device.device_kind``) from the table, or ``override``."""
    if override:
        return override
    for name in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if name in kind:
            return PEAK_BF16_TFLOPS[name]
    return None


# -- student ------------------------------------------------------------------------------------


def part_student(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from adcsr_jax.infer import InferOptions, Upscaler
    from adcsr_jax.models.adcsr import AdcSRConfig, init_student

    module, params = init_student(AdcSRConfig.tiny() if args.tiny else AdcSRConfig.full())
    size = TINY_LR if args.tiny else FULL_LR
    out: dict[str, Any] = {"lr": size, "sr": 4 * size}
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        rows, best = [], None
        batch = 1
        while batch <= args.max_infer_batch:
            opts = InferOptions(tile=size, overlap=0, batch_size=batch, dtype=dtype, progress=False)
            up = Upscaler(module, params, opts)
            lr = np.repeat((_lr(size) + 1) / 2, batch, axis=0)
            try:
                times = _time(lambda up=up, lr=lr: up(lr), args.iters, args.warmup)
            except Exception as e:  # noqa: BLE001 - an OOM ends the search
                if not _is_oom(e):
                    raise
                rows.append({"batch": batch, "error": "out of memory"})
                break
            med = statistics.median(times)
            row = {"batch": batch, "median_s": med, "images_per_s": batch / med, "times_s": times}
            rows.append(row)
            if batch == 1:
                outputs[dtype] = np.asarray(up(lr[:1]), np.float32)
            if best is not None and row["images_per_s"] < 1.03 * best["images_per_s"]:
                break
            best = row if best is None or row["images_per_s"] > best["images_per_s"] else best
            batch *= 2
        best = max((r for r in rows if "images_per_s" in r), key=lambda r: r["images_per_s"])
        out[dtype] = {"batch1_latency_s": rows[0]["median_s"], "best_batch": best["batch"],
                      "best_images_per_s": best["images_per_s"], "batches": rows}  # fmt: skip
    a, b = outputs["float32"], outputs["bfloat16"]
    mse = float(np.mean((a - b) ** 2))
    out["bf16_vs_fp32"] = {"psnr_db": float("inf") if mse == 0 else -10 * math.log10(mse),
                           "max_abs": float(np.abs(a - b).max())}  # fmt: skip
    out["peak_device_bytes"] = _peak_bytes()
    return out


# -- the stage-2 step -----------------------------------------------------------------------------


def step_config(args: argparse.Namespace, batch: int):
    """The preset on this machine's devices with random networks of its size and ``batch``
    images per device (no evaluation)."""
    import jax

    from adcsr_jax.train.config import load_config

    variant = "tiny" if args.tiny else args.preset
    n = jax.device_count()
    extra = [f"--config.data.batch_size={batch * n}", "--config.model.source=random",
             f"--config.model.size={'tiny' if args.tiny else 'full'}", "--config.eval.lr_dir=",
             f"--config.mesh.data={n}", "--config.mesh.fsdp=1", "--config.mesh.tensor=1",
             "--config.grad_accum=1"]  # fmt: skip
    return load_config(f"{ROOT / 'configs' / 'stage2.py'}:{variant}", extra)


def _estimate(compiled: Any) -> int:
    from adcsr_jax.train import loop

    m = loop.compiled_memory(compiled)
    return int(
        m.get("compile/argument_bytes", 0) + m.get("compile/output_bytes", 0)
        - m.get("compile/alias_bytes", 0) + m.get("compile/temp_bytes", 0)
    )  # fmt: skip


def choose_batch(args: argparse.Namespace, limit: int | None, compile_at) -> tuple[int, Any, list]:
    """``(batch, CompiledStep, tried)``: ``--step-batch``, else the largest batch whose compiled
    estimate is under ``args.fit * limit`` (linear in the batch from batches 1 and 2)."""
    tried = []

    def at(b: int) -> Any:
        t0 = time.perf_counter()
        c = compile_at(b)
        tried.append({"batch": b, "estimate_bytes": _estimate(c.compiled),
                      "compile_s": time.perf_counter() - t0})  # fmt: skip
        return c

    if args.step_batch or limit is None:
        b = args.step_batch or (1 if args.tiny else 4)
        return b, at(b), tried
    budget = args.fit * limit
    one, two = at(1), at(2)
    e1, e2 = tried[0]["estimate_bytes"], tried[1]["estimate_bytes"]
    per = max(e2 - e1, 1)
    if e1 > budget:
        return 1, one, tried
    b = max(1, min(args.max_step_batch, int((budget - e1) // per) + 1))
    if b <= 2:
        return (2, two, tried) if e2 <= budget else (1, one, tried)
    c = at(b)
    while tried[-1]["estimate_bytes"] > budget and b > 2:
        b = max(2, b - max(1, math.ceil((tried[-1]["estimate_bytes"] - budget) / per)))
        c = at(b)
    return b, c, tried


def part_step(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import numpy as np

    from adcsr_jax import sharding as shd
    from adcsr_jax.train import loop
    from adcsr_jax.train import plan as plan_lib

    device = _device()
    limit = device["bytes_limit"]

    def compile_at(b: int) -> Any:
        config = step_config(args, b)
        return plan_lib.compile_step(config)

    batch, c, tried = choose_batch(args, limit, compile_at)
    t0 = time.perf_counter()
    host = c.stage.init(loop.init_rng(0))
    init_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    while True:
        n = jax.device_count() * batch
        data = {k: rng.uniform(0, 1, (n, *v.shape[1:])).astype(v.dtype) for k, v in c.batch.items()}
        state = shd.place(host, c.shardings)
        placed = {k: jax.device_put(v, c.batch[k].sharding) for k, v in data.items()}
        repl = shd.replicated(c.mesh)
        key = jax.device_put(jax.random.key_data(loop.train_key(0)), repl)
        times = []
        try:
            for i in range(args.warmup + args.iters):
                t = time.perf_counter()
                count = jax.device_put(np.int32(i + 1), repl)
                state, metrics = c.compiled(state, placed, count, key)
                jax.block_until_ready(metrics)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t)
            break
        except Exception as e:  # noqa: BLE001 - out of memory: halve the batch and recompile
            if not _is_oom(e) or batch == 1:
                raise
            del state, placed
            tried.append({"batch": batch, "error": "out of memory at run time"})
            batch //= 2
            c = compile_at(batch)
            tried.append({"batch": batch, "estimate_bytes": _estimate(c.compiled)})
    med = statistics.median(times)
    flops = loop.compiled_flops(c.compiled)
    peak = peak_tflops(device["kind"], args.peak_tflops)
    config = step_config(args, batch)
    out = {
        "preset": "tiny" if args.tiny else args.preset,
        "compute_dtype": str(config.compute_dtype),
        "remat": bool(config.remat),
        "batch_per_device": batch,
        "hr_crop": int(c.batch["gt"].shape[1]),
        "s_per_step": med,
        "times_s": times,
        "images_per_s": jax.device_count() * batch / med,
        "flops_per_step_per_device": flops,
        "achieved_tflops": flops / med / 1e12 if flops else None,
        "peak_tflops_bf16": peak,
        "mfu": flops / med / (peak * 1e12) if flops and peak else None,
        "peak_device_bytes": _peak_bytes(),
        "compiled_estimate_bytes": _estimate(c.compiled),
        "bytes_limit": limit,
        "tried": tried,
        "init_s": init_s,
        "loss_g": float(metrics["loss/g"]),
    }
    if args.cpu_plan:
        out["cpu_plan"] = cpu_plan(args, batch)
    return out


def cpu_plan(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """``adcsr plan`` of the same configuration on this host's CPU (one simulated device)."""
    variant = "tiny" if args.tiny else args.preset
    cmd = [sys.executable, "-m", "adcsr_jax", "plan", "--config",
           f"{ROOT / 'configs' / 'stage2.py'}:{variant}", "--devices", "1", "--json",
           "--fast-compile", f"--config.data.batch_size={batch}", "--config.model.source=random",
           f"--config.model.size={'tiny' if args.tiny else 'full'}", "--config.mesh.data=1",
           "--config.mesh.fsdp=1", "--config.mesh.tensor=1", "--config.grad_accum=1"]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": _pythonpath()}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    p = json.loads(proc.stdout)
    return {"peak_bytes": p["per_device"].get("peak_bytes"), "temp_bytes":
            p["per_device"].get("temp_bytes"), "flops": p["flops_per_device"],
            "wall_s": time.perf_counter() - t0}  # fmt: skip


# -- the degradation ----------------------------------------------------------------------------


def part_degradation(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import numpy as np

    from adcsr_jax.data.degradations import Degrader

    deg = Degrader("adcsr")
    crop = 64 if args.tiny else deg.config.gt_size
    batch = args.degrade_batch
    rng = np.random.default_rng(0)
    gt = jax.device_put(rng.uniform(0, 1, (batch, crop, crop, 3)).astype(np.float32))
    draws = [
        deg.sample(np.random.default_rng(i), batch, (crop, crop))
        for i in range(args.degrade_batches)
    ]
    key = jax.random.key(0)
    for p in draws:  # compiles every bucket these draws use
        jax.block_until_ready(deg.apply(gt, p, key))
    sample_s, apply_s = [], []
    for i in range(args.degrade_batches):
        t = time.perf_counter()
        p = deg.sample(np.random.default_rng(i), batch, (crop, crop))
        sample_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        jax.block_until_ready(deg.apply(gt, p, key))
        apply_s.append(time.perf_counter() - t)
    return {"batch": batch, "crop": crop, "sample_s_median": statistics.median(sample_s),
            "apply_s_median": statistics.median(apply_s), "compilations": deg.num_compilations(),
            "per_batch_s": statistics.median(s + a for s, a in zip(sample_s, apply_s))}  # fmt: skip


# -- driver -------------------------------------------------------------------------------------


def _pythonpath() -> str:
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))


def run_part(args: argparse.Namespace) -> None:
    fn = {"student": part_student, "step": part_step, "degradation": part_degradation}[args.part]
    print("RESULT " + json.dumps(fn(args)), flush=True)


def _forward(args: argparse.Namespace, part: str, extra: list[str]) -> list[str]:
    cmd = [sys.executable, __file__, "--part", part, "--preset", args.preset,
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--fit", str(args.fit),
           "--max-infer-batch", str(args.max_infer_batch),
           "--max-step-batch", str(args.max_step_batch),
           "--degrade-batches", str(args.degrade_batches)]  # fmt: skip
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--cpu-plan"] if args.cpu_plan else []
    cmd += ["--step-batch", str(args.step_batch)] if args.step_batch else []
    cmd += ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
    return cmd + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--tiny", action="store_true", help="tiny networks (CPU smoke run)")
    parser.add_argument("--preset", default="gpu_8x80gb",
                        help="configs/stage2.py variant of the step (dtype, remat)")  # fmt: skip
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--fit", type=float, default=0.9,
                        help="fraction of the device's bytes_limit the step may plan to use")  # fmt: skip
    parser.add_argument("--step-batch", type=int, default=0, help="per-device batch (no search)")
    parser.add_argument("--max-step-batch", type=int, default=64)
    parser.add_argument("--max-infer-batch", type=int, default=64)
    parser.add_argument("--degrade-batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--degrade-batches", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="dense bf16 peak for the MFU (default: the datasheet table)")  # fmt: skip
    parser.add_argument("--cpu-plan", action="store_true",
                        help="also run `adcsr plan` on this host's CPU at the chosen batch")  # fmt: skip
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    if args.part:
        run_part(args)
        return 0
    env = {**os.environ, "PYTHONPATH": _pythonpath()}
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")  # the step searches for its batch
    results: dict[str, Any] = {}
    failed = []
    for part in [p for p in PARTS if p in args.only]:
        extra = []
        if part == "degradation":  # one step's batch (per device)
            step = results.get("step", {})
            extra = [
                "--degrade-batch",
                str(step.get("batch_per_device") or (2 if args.tiny else 8)),
            ]
        print(f"== {part}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(_forward(args, part, extra), capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
            results[part] = {"error": f"exit {proc.returncode}", "stderr": proc.stderr[-2000:]}
            failed.append(part)
            continue
        results[part] = json.loads(line[len("RESULT ") :])
        results[part]["wall_s"] = time.perf_counter() - t0
        print(json.dumps(results[part])[:600], flush=True)
    step, deg = results.get("step", {}), results.get("degradation", {})
    if "s_per_step" in step and "per_batch_s" in deg:
        results["degradation"]["share_of_step"] = deg["per_batch_s"] / (
            deg["per_batch_s"] + step["s_per_step"]
        )
    probe = subprocess.run([sys.executable, "-c", "import json, sys; sys.path.insert(0, "
                            f"{str(HERE)!r}); import gpu_check; print(json.dumps(gpu_check._device()))"],
                           capture_output=True, text=True, env=env)  # fmt: skip
    results["device"] = json.loads(probe.stdout) if probe.returncode == 0 else None
    results["tiny"] = args.tiny
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
