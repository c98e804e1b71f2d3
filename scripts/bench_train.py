#!/usr/bin/env python
"""Benchmark the stage-2 training step on this CPU: Flax against the PyTorch ``train.py`` step.

Full-size networks with random weights (SD 2.1-base UNet and VAE, OSEDiff-shaped teacher, AdcSR's
half decoder, the pruned student, the SD-UNet discriminator with rank-4 LoRA), batch 1, LR 128
(HR 512), fp32. Parts run in their own subprocesses, alternating Flax / PyTorch, so each peak RSS
is its own and both see the same machine load:

* ``flax``: the loop's own step program (``loop.jit_step``: NaN guard, state shardings,
  donation), compiled from shapes by ``adcsr_jax.train.plan.compile_step`` before any weight
  exists (what ``adcsr plan`` reports is what runs), then run on random weights; s/step after
  warm-up, XLA's cost-analysis FLOPs of the compiled step, and the achieved fraction of the
  measured matmul peak.
* ``torch``: ``adcsr_jax.testing.torch_stage2.TorchStage2.step`` (``train.py``'s iteration,
  diffusers + peft, no autocast), D converted from the SD UNet in place (no extra copy).
* ``matmul-peak``: fp32 GFLOP/s of a 4096x960x960 matmul in XLA (the step's roofline here).
* ``tiny``: steps/s of the ``configs/stage2.py:tiny`` step (batch 2, 64-pixel HR crops).

Heavy (each full-size part holds ~15 GB; ~30 min on a shared 2-core machine)::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_train.py --out bench_train.json

Measured here (2 shared CPU cores, 24 GB, 2026-12-02, jax 0.10.2 / torch 2.13.0, fp32, batch 1,
LR 128; ``--only ...`` runs of the command above):

* torch ``train.py`` step: 65.7 and 70.4 s/step (two runs), peak RSS 21.0 / 21.2 GB.
* Flax step: **does not fit in this machine's 24 GB**. The placed state is 14.0 GB (RSS), XLA's
  temporaries 11.8 GiB (10.0 GiB with ``--remat``) with the memory-minimising scheduler, so
  the first step was OOM-killed each time (24.2 GB RSS with XLA's default scheduler). Time
  against torch at full size is therefore unmeasured; the memory target (<= 1.0x torch) is
  missed by about 4 GB (state 13 + temporaries 10-12 against torch's 21 in all). Those runs
  used attention chunks of 512 and convs on maps up to 256 pixels as matmuls; the defaults are
  now the full config's (chunk 1024, no conv matmul), for which ``adcsr plan`` of this step
  (2026-12-03: ``adcsr plan --config configs/stage2.py:full --fast-compile --devices 1
  --config.compute_dtype=float32 --config.grad_accum=1 --config.data.batch_size=1
  --config.prompt.source=fixed --config.remat=True``) gives 7.85 GiB of temporaries and a
  19.83 GiB (21.3 GB) peak: about torch's 21 GB before runtime overhead.
* 2026-12-03, a slower 2-core AMD EPYC host (23 GiB), the loop's program as above, ``--remat``:
  torch 80.1 / 90.2 / 76.4 s/step in three runs (spread 73-97 s), peak RSS 21.15 / 21.11 /
  21.03 GB. Flax: XLA temporaries 7.85 GiB (the plan's figure, now the program that runs);
  after the compile 2.8 GB RSS (glibc-trimmed: the compile's freed heap otherwise stays
  resident, 6.6 GB), after placing the state 15.5 GB; the first step needs ~15.5 + 8.4 GB and
  was OOM-killed each time. At ``--lr 96`` too (temporaries 6.90 GiB; torch 48.9 s/step,
  18.43 GB). So the time ratio at full size is still unmeasured here, and memory misses
  torch's by ~3 GB. Where it goes (buffer assignment and live ranges of the same program at
  HR 128, ``--xla_dump_to``): temporaries 4.77 GiB even at that size, peaking in the update
  phase, where 3.0 GiB are layout copies of the student's conv weight-gradients (XLA:CPU's
  backward conv yields them output-channel first, ``f32[1920,3,3,960]``, and each is copied
  to the HWIO layout of its parameter, all copies live at once) and 2.0 GiB are the new
  parameters / Adam moments written beside the old ones instead of in place; the NaN guard
  costs nothing (4.774 vs 4.776 GiB without it). Sequencing the update leaf by leaf is the
  next thing to try. But even at ``--lr 32`` (HR 128: 15.3 GB placed + 4.77 GiB of
  temporaries = 20.4 GB by XLA's own accounting; torch there: 11.4 s/step, 15.83 GB peak,
  everything included) the step was OOM-killed, so XLA:CPU's
  runtime also allocates several GB outside its buffer assignment (donation itself works:
  a donated CPU buffer is reused in place); sampling RSS during the step is the way to find
  what.
* 2026-12-06, same host. Where the full step's XLA temporaries go (``adcsr plan`` as above at
  HR 512, ``--xla_dump_to``, live ranges summed per instruction of the schedule): the peak is in
  the backward passes, not the update. 2.1 GiB of it were transposed copies of the frozen
  discriminator's conv kernels (XLA:CPU builds one per kernel for the input gradient, shares it
  between the three backward passes through D and keeps all of them alive from the first to the
  last), 1.9 GiB attention intermediates, 1.15 GiB the student's conv weight-gradients (held
  for the update, as torch holds ``.grad``). ``nn.conv.late_backward`` (every Flax conv's
  backward builds its copies from its own cotangent) removes the first: temporaries 8.52 ->
  6.49 GiB with this project's XLA:CPU defaults (YNNPACK off), against 7.85 GiB before either
  change; YNNPACK off alone costs 0.67 GiB here (8.52 vs 7.85). Guarding the update with
  ``lax.cond`` instead of ``jnp.where`` changed nothing at full size (4.86 vs 4.86 GiB at HR
  128), and neither did ``optimization_barrier`` s (XLA:CPU expands them before CSE).
  ``--lr 32 --remat`` then: 4.04 GiB of temporaries, 15.4 GB placed, yet RSS climbed steadily
  through the first step to 24.0 GB and the kernel killed it (the RSS watcher's trace), so
  ~4.3 GB beyond XLA's buffer assignment are still allocated at run time (donation itself is
  verified: a donated state's buffers are reused, RSS grows by the temporaries alone). torch in
  the same run: 10.9 s/step, 15.84 GB.
* Prompt path (full-size RAM Swin-L + SD 2.1 text encoder, own program): 2.55 s per image,
  about 4% of a step with per-image prompts at torch's step time.
* Tiny (``configs/stage2.py:tiny``, batch 4, HR 64): 0.165 s/step (6.05 steps/s), compile
  171 s (the loop's program on the slower host of 2026-12-03: 0.24 s/step, compile 266 s).
  With the tagger and text encoder inside the step: 0.202 s/step; the same prompt path as its
  own program first: 0.003 + 0.165 = 0.169 s (in-step 1.20x slower at this size).
* XLA fp32 matmul peak 188-198 GFLOP/s; the tiny step reaches 11% of it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("matmul-peak", "tiny", "tiny-prompt", "flax", "torch", "prompt")
JAX_PARTS = ("tiny", "tiny-prompt", "flax", "prompt")
# XLA:CPU's default concurrency-optimised scheduler keeps independent branches alive at once to
# run them in parallel: the full-size Flax step then outgrew this 24 GB machine (killed at
# 24.2 GB RSS, 2026-12-02) where torch peaks at 21 GB. The memory-minimising order is what GPU
# and TPU compilers do under their memory limit (``adcsr plan`` compiles with it too).
MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _trimmed_rss_gb() -> float:
    """Gives the heap's free pages back to the OS (glibc ``malloc_trim``) and returns the
    current RSS in GB. The full step's compile frees GBs of small allocations that glibc
    otherwise keeps resident, where the state and the step's buffers (large, mmap'd) cannot
    reuse them: 6.6 GB RSS after the compile, 2.8 GB after the trim (2026-12-03)."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _rss_gb()


def _config(variant: str):
    """``configs/stage2.py:<variant>`` as ``adcsr train`` reads it (the base config's defaults
    merged in)."""
    from adcsr_jax.train.config import load_config

    return load_config(f"{ROOT / 'configs' / 'stage2.py'}:{variant}")


def _batch(lr: int, batch: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "lr": rng.uniform(0, 1, (batch, lr, lr, 3)).astype(np.float32),
        "gt": rng.uniform(0, 1, (batch, 4 * lr, 4 * lr, 3)).astype(np.float32),
    }


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) or None


def _timed(fn, args: argparse.Namespace) -> list[float]:
    """Seconds per call of ``fn`` (which blocks until its result is ready) after warm-up."""
    times = []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        fn()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return times


def _prompt_fn(prompt):
    """Jitted ``(tagger params, text params, lr01) -> (B, 77, D)``: ``stage2.batch_prompts``'
    path (DAPE tags of each LR through the text encoder), as its own program."""
    import dataclasses

    import jax

    from adcsr_jax.models.tagger import prompt_embeddings_on_device

    def embed(tagger_params, text_params, lr01):
        tagger = dataclasses.replace(prompt.tagger, params=tagger_params)
        return prompt_embeddings_on_device(
            tagger, prompt.tag_tokens, (prompt.text_module, text_params), lr01
        )

    fn = jax.jit(embed)
    return lambda lr01: fn(prompt.tagger.params, prompt.text_params, lr01).block_until_ready()


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1e6


def _watch_rss(label: str, every_s: float = 0.05) -> threading.Event:
    """Samples this process's RSS in a thread and prints each new high (0.25 GB steps) to
    stderr as it happens, so a step that the kernel OOM-kills still shows how far it got."""
    stop = threading.Event()

    def watch() -> None:
        high = _rss_gb()
        while not stop.wait(every_s):
            rss = _rss_gb()
            if rss > high + 0.25:
                high = rss
                print(f"{label}: RSS {rss:.2f} GB", file=sys.stderr, flush=True)

    threading.Thread(target=watch, daemon=True).start()
    return stop


def _flax_steps(
    variant: str, size: str, lr: int, batch: int, args: argparse.Namespace, in_step: bool = False
) -> dict:
    """The loop's own step program (``loop.jit_step``: NaN guard, state shardings, donation),
    compiled from shapes by ``adcsr_jax.train.plan.compile_step`` exactly as ``adcsr train`` and
    ``adcsr plan`` compile it, then run on random weights: one fixed prompt embedding (as the
    torch part is given), or with ``in_step`` the config's tagger + text encoder inside the step.

    Compiled before any weight exists, so the compiler's working memory and the placed state
    never coexist (the full-size compile alone peaks at 6.6 GB RSS)."""
    import jax
    import numpy as np

    from adcsr_jax.train import loop, stage2
    from adcsr_jax.train import plan as plan_lib
    from adcsr_jax.weights.stage2_weights import random_stage2_weights

    config = _config(variant)
    config.compute_dtype, config.grad_accum = "float32", 1
    config.remat = bool(args.remat)
    config.attention_query_chunk = args.attention_chunk
    config.conv_matmul_max_pixels = args.conv_matmul_pixels
    config.data.batch_size, config.data.crop = batch, 4 * lr
    config.mesh.num_devices = 1
    config.prompt.source, config.prompt.program = (
        ("tagger", "step") if in_step else ("fixed", "batch")
    )
    print(f"imported: RSS {_rss_gb():.2f} GB", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    step = plan_lib.compile_step(config)
    compile_s = time.perf_counter() - t0
    mem = step.compiled.memory_analysis()
    print(f"compiled: RSS {_peak_rss_mb() / 1024:.1f} GB peak so far, {_trimmed_rss_gb():.1f} GB "
          f"after trim; XLA temporaries {mem.temp_size_in_bytes / 2**30:.2f} GiB",
          file=sys.stderr, flush=True)  # fmt: skip
    t0 = time.perf_counter()
    weights = random_stage2_weights(size, seed=0)
    width = weights.teacher_config.unet.cross_attention_dim
    prompt = stage2.load_prompt(config, width) if in_step else None
    nets = stage2.build_nets(config, weights, prompt)
    state = stage2.init_state(config, weights, nets, jax.random.key(0), prompt)
    del weights
    leaves, treedef = jax.tree.flatten(state)
    del state
    expected = jax.tree.leaves(step.shapes)
    if treedef != jax.tree.structure(step.shapes) or any(
        (x.shape, x.dtype) != (e.shape, e.dtype) for x, e in zip(leaves, expected, strict=True)
    ):
        raise SystemExit("bench_train: the random state differs from the compiled step's shapes")
    # leaf by leaf: each host copy is freed once it is placed
    for i, sharding in enumerate(jax.tree.leaves(step.shardings)):
        leaves[i] = jax.device_put(leaves[i], sharding)
    state = jax.tree.unflatten(treedef, leaves)
    del leaves
    init_s = time.perf_counter() - t0
    print(f"placed: RSS {_peak_rss_mb() / 1024:.1f} GB peak so far, {_trimmed_rss_gb():.1f} GB "
          "after trim", file=sys.stderr, flush=True)  # fmt: skip
    rng = np.random.default_rng(0)
    high = {np.dtype(np.uint8): 255.0}  # the batch in the dtype the config's pipeline yields
    data = {
        k: jax.device_put(
            rng.uniform(0, high.get(s.dtype, 1.0), s.shape).astype(s.dtype), s.sharding
        )
        for k, s in step.batch.items()
    }
    key_data = jax.random.key_data(loop.train_key(0))
    out = {"index": 0}

    def one_step():
        nonlocal state
        out["index"] += 1
        state, out["metrics"] = step.compiled(state, data, np.int32(out["index"]), key_data)
        jax.block_until_ready(out["metrics"])

    placed_gb = _rss_gb()
    watcher = _watch_rss("step")
    times = _timed(one_step, args)
    watcher.set()
    result = {"times_s": times, "placed_rss_gb": placed_gb,
              "flops": _flops(step.compiled), "compile_s": compile_s,
              "xla_temp_gb": mem.temp_size_in_bytes / 2**30, "init_s": init_s,
              "batch": {k: list(s.shape) for k, s in step.batch.items()},
              "loss_g": float(out["metrics"]["loss/g"]),
              "skipped": float(out["metrics"]["guard/skipped"])}  # fmt: skip
    if prompt is not None:  # the same prompt path as a separate program, for the comparison
        alone = _prompt_fn(prompt)
        result["prompt_alone_s"] = statistics.median(_timed(lambda: alone(data["lr"]), args))
    return result


def bench_flax(args: argparse.Namespace) -> dict:
    return _flax_steps("full", "full", args.lr, 1, args)


def bench_tiny(args: argparse.Namespace) -> dict:
    config = _config("tiny")
    out = _flax_steps("tiny", "tiny", config.data.crop // 4, config.data.batch_size, args)
    out["steps_per_s"] = 1.0 / statistics.median(out["times_s"])
    return out


def bench_tiny_prompt(args: argparse.Namespace) -> dict:
    """The tiny step with its tagger and text encoder inside the step (``prompt.source=tagger``),
    and the same prompt path alone: in-step against computing the prompts per batch first."""
    config = _config("tiny")
    lr, batch = config.data.crop // 4, config.data.batch_size
    return _flax_steps("tiny", "tiny", lr, batch, args, in_step=True)


def bench_prompt(args: argparse.Namespace) -> dict:
    """The full-size prompt path (RAM Swin-L + tagging head at 384, SD 2.1's text encoder) on
    the full step's LR batch, as its own program: its share of a step with prompts."""
    import jax

    from adcsr_jax.weights.prompt_weights import random_prompt_weights

    t0 = time.perf_counter()
    prompt = random_prompt_weights(1024, seed=0, full=True)
    init_s = time.perf_counter() - t0
    fn = _prompt_fn(prompt)
    lr = jax.device_put(_batch(args.lr, 1)["lr"])
    return {"times_s": _timed(lambda: fn(lr), args), "init_s": init_s}


def bench_torch(args: argparse.Namespace) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from adcsr_jax.testing import reference as ref
    from adcsr_jax.testing import torch_adcsr as T
    from adcsr_jax.testing.torch_stage2 import TorchStage2, build_torch_discriminator

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    kwargs = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    sd_unet = UNet2DConditionModel(**kwargs(ref.SD21_UNET_CONFIG))
    half = T.torch_half_decoder(T.HALF_DECODER_CONFIG, seed=0)
    net, _ = T.build_torch_student(sd_unet, half)
    net.train()
    disc = build_torch_discriminator(sd_unet, 256, 4, copy_unet=False)
    del sd_unet
    t_unet = UNet2DConditionModel(**kwargs(ref.SD21_UNET_CONFIG)).eval()
    t_vae = AutoencoderKL(**kwargs(ref.SD21_VAE_CONFIG)).eval()
    sd_vae = AutoencoderKL(**kwargs(ref.SD21_VAE_CONFIG)).eval()
    stage = TorchStage2(net, disc, t_vae, t_unet, sd_vae, half)
    init_s = time.perf_counter() - t0
    data = _batch(args.lr, 1)
    lq, gt = ref.nchw(data["lr"]), ref.nchw(data["gt"])
    text = torch.randn(1, 77, 1024)
    times = []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        losses = stage.step(lq, gt, text)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return {"times_s": times, "init_s": init_s, "loss_g": losses["loss/g"]}


def bench_matmul_peak(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    flop = 2 * 4096 * 960 * 960
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4096, 960), np.float32))
    w = jnp.asarray(rng.standard_normal((960, 960), np.float32))
    mm = jax.jit(lambda x, w: x @ w)
    mm(x, w).block_until_ready()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        mm(x, w).block_until_ready()
        times.append(time.perf_counter() - t0)
    return {"times_s": times, "gflops": flop / min(times) / 1e9}


def run_part(args: argparse.Namespace) -> None:
    fn = {"flax": bench_flax, "torch": bench_torch, "tiny": bench_tiny,
          "tiny-prompt": bench_tiny_prompt, "prompt": bench_prompt,
          "matmul-peak": bench_matmul_peak}[args.part]  # fmt: skip
    result = fn(args)
    result.update(part=args.part, peak_rss_mb=_peak_rss_mb(),
                  median_s=statistics.median(result["times_s"]))  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)


def summarise(results: dict[str, list[dict]]) -> list[str]:
    lines = []
    peak = results.get("matmul-peak", [{}])[0].get("gflops")
    for name, runs in results.items():
        for r in runs:
            if name == "matmul-peak":
                lines.append(f"matmul-peak    XLA fp32 4096x960x960: {r['gflops']:.1f} GFLOP/s")
                continue
            extra = ""
            if r.get("flops"):
                rate = r["flops"] / r["median_s"] / 1e9
                extra = f", XLA {r['flops'] / 1e12:.2f} TFLOP/step = {rate:.1f} GFLOP/s"
                if peak:
                    extra += f" = {100 * rate / peak:.0f}% of the matmul peak"
            if "steps_per_s" in r:
                extra += f", {r['steps_per_s']:.2f} steps/s"
            comp = f", compile {r['compile_s']:.0f} s" if "compile_s" in r else ""
            lines.append(f"{name:6s} {r['median_s']:.2f} s/step (runs "
                         f"{[round(t, 2) for t in r['times_s']]}), peak RSS "
                         f"{r['peak_rss_mb'] / 1024:.2f} GB, init {r['init_s']:.0f} s{comp}{extra}")  # fmt: skip
    if results.get("flax") and results.get("prompt"):
        f = statistics.median(r["median_s"] for r in results["flax"])
        p = statistics.median(r["median_s"] for r in results["prompt"])
        lines.append(f"prompt path: {p:.2f} s per batch = {100 * p / (f + p):.0f}% of a full "
                     f"step with per-image prompts ({f + p:.2f} s)")  # fmt: skip
    if results.get("tiny") and results.get("tiny-prompt"):
        fixed = statistics.median(r["median_s"] for r in results["tiny"])
        r = results["tiny-prompt"][-1]
        cached = fixed + r["prompt_alone_s"]
        lines.append(f"tiny, prompts in the step: {r['median_s']:.3f} s/step; computed per batch "
                     f"first: {r['prompt_alone_s']:.3f} + {fixed:.3f} = {cached:.3f} s "
                     f"(in-step / per-batch {r['median_s'] / cached:.2f}x)")  # fmt: skip
    if results.get("flax") and results.get("torch"):
        f = statistics.median(r["median_s"] for r in results["flax"])
        t = statistics.median(r["median_s"] for r in results["torch"])
        fm = max(r["peak_rss_mb"] for r in results["flax"])
        tm = max(r["peak_rss_mb"] for r in results["torch"])
        lines.append(f"Flax / PyTorch: time {f / t:.2f}x, peak RSS {fm / tm:.2f}x (target <= 1.0)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--lr", type=int, default=128, help="LR side (HR is 4x)")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="flax/torch alternations")
    # Defaults: configs/stage2.py:full's. `adcsr plan` of this step (fp32, batch 1, remat, fixed
    # prompt): 7.85 GiB of XLA temporaries with them, against 10.0 GiB at chunk 512 + conv 256.
    parser.add_argument("--attention-chunk", type=int, default=1024,
                        help="Flax: exact chunked attention, queries at a time (0: off)")  # fmt: skip
    parser.add_argument("--conv-matmul-pixels", type=int, default=0,
                        help="Flax: convs on maps up to this size as one matmul (0: off)")  # fmt: skip
    parser.add_argument("--xla-flags", default=MEMORY_SCHEDULER,
                        help="appended to XLA_FLAGS of the JAX parts ('' for XLA's defaults)")  # fmt: skip
    parser.add_argument("--remat", action="store_true",
                        help="Flax: rematerialise UNet/decoder blocks (fits 24 GB at LR 128)")  # fmt: skip
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    args = parser.parse_args()
    if args.part:
        run_part(args)
        return 0
    runs = [p for p in ("matmul-peak",) if p in args.only]
    for _ in range(args.repeats):
        runs += [p for p in ("flax", "torch") if p in args.only]
    runs += [p for p in ("prompt", "tiny", "tiny-prompt") if p in args.only]
    results: dict[str, list[dict]] = {}
    for part in runs:
        cmd = [sys.executable, __file__, "--part", part, "--lr", str(args.lr),
               "--iters", str(args.iters), "--warmup", str(args.warmup),
               "--attention-chunk", str(args.attention_chunk),
               "--conv-matmul-pixels", str(args.conv_matmul_pixels),
               *(["--remat"] if args.remat else [])]  # fmt: skip
        print(f"== {part}", flush=True)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
        if part in JAX_PARTS and args.xla_flags:
            env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
            print(f"{part}: failed (exit {proc.returncode})", file=sys.stderr)
            continue
        results.setdefault(part, []).append(json.loads(lines[-1][len("RESULT ") :]))
        print(summarise({part: results[part][-1:]})[0], flush=True)
    print("\n".join(["", *summarise(results)]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
