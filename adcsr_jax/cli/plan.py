"""Memory plan of a training step: adcsr plan --config FILE[:VARIANT] [--config.x=y ...].

Compiles the configured stage's jitted step ahead of time for the configured mesh on simulated
CPU devices (no accelerator, no weights, no data) and prints per device: parameter, optimizer-state
and frozen bytes, XLA's argument / output / temporary bytes, FLOPs per step, the bytes moved by
collectives per step, and every network's parameter count. Example:

  adcsr plan --config configs/stage2.py --config.mesh.fsdp=8 --devices 8 --json

``--fast-compile``: XLA:CPU's LLVM optimisation off (``FAST_FLAGS``); the plan's figures come
from the HLO passes and buffer assignment, which these flags leave alone. The plan always
compiles with XLA:CPU's memory-minimising scheduler (``PLAN_FLAGS``), as accelerators schedule.

``--params-only``: just every network's parameter count (student trainable / frozen,
discriminator trainable / frozen, teacher, ...) from the architectures, without compiling or
reading weights (``adcsr_jax.train.param_counts``), e.g. a Table B.1 check:

  adcsr plan --config configs/ablations.py:bksdm --params-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EXTRA_PREFIX = "--config."
_FLAG = "--xla_force_host_platform_device_count"
_MARK = "ADCSR_PLAN_DEVICES"  # set in the re-executed process
# XLA:CPU code generation without LLVM's optimisation: the plan reads the compiled HLO, its
# buffer assignment and cost analysis, none of which depend on the machine code's quality.
FAST_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
# Always: XLA:CPU's concurrency-optimised scheduler keeps independent work alive to run it in
# parallel, which multiplies temporaries (full-size student forward + backward, batch 1: 8.45 GiB
# with it, 2.67 GiB without; remat then saves 1.5 GiB, with it nothing); GPU and TPU compilers
# schedule under a memory limit, so the plan uses the memory-minimising order.
PLAN_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="config file, optionally :VARIANT (configs/stage2.py:tiny)"
    )
    parser.add_argument(
        "--devices",
        type=int,
        help="simulated devices (default: config.mesh.num_devices, else the mesh's product, else 8)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument(
        "--fast-compile",
        action="store_true",
        help="compile with LLVM optimisation off (XLA flags "
        + " ".join(FAST_FLAGS)
        + "): the same HLO passes and buffer assignment, minutes less at full size",
    )
    parser.add_argument(
        "--params-only",
        action="store_true",
        help="print every network's parameter count only (no compile, no weights read)",
    )
    parser.set_defaults(_extra_prefix=EXTRA_PREFIX)


def default_devices(config) -> int:
    m = config.mesh
    if m.num_devices > 0:
        return int(m.num_devices)
    sizes = [int(m.data), int(m.fsdp), int(m.tensor)]
    return int(sizes[0] * sizes[1] * sizes[2]) if -1 not in sizes else 8


def _simulate(devices: int, argv: list[str], fast: bool = False) -> None:
    """Re-executes this command with ``devices`` simulated CPU devices (and ``FAST_FLAGS`` when
    ``fast``) unless already set up."""
    if os.environ.get(_MARK) == str(devices):
        return
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_FLAG)]
    ours = PLAN_FLAGS + (FAST_FLAGS if fast else ())
    names = {f.split("=")[0] for f in ours}
    flags = [f for f in flags if f.split("=")[0] not in names] + list(ours)
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=" ".join([*flags, f"{_FLAG}={devices}"]),
        JAX_PLATFORMS="cpu",
        **{_MARK: str(devices)},
    )
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "adcsr_jax", *argv], env)


def run(args: argparse.Namespace) -> int:
    from adcsr_jax.train.config import load_config  # noqa: PLC0415 - keeps `adcsr --help` light

    extra = list(getattr(args, "extra", []))
    config = load_config(args.config, extra)
    if getattr(args, "params_only", False):
        from adcsr_jax.train import param_counts  # noqa: PLC0415

        result = param_counts.param_counts(config)
        print(param_counts.as_json(result) if args.json else param_counts.format_counts(result))
        return 0
    devices = args.devices or default_devices(config)
    argv = ["plan", "--config", args.config, "--devices", str(devices), *extra]
    fast = bool(getattr(args, "fast_compile", False))
    argv += ["--json"] if args.json else []
    _simulate(devices, argv + (["--fast-compile"] if fast else []), fast)

    import logging  # noqa: PLC0415

    from adcsr_jax.train import plan  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    result = plan.plan(config)
    print(json.dumps(result, indent=2) if args.json else plan.format_plan(result))
    return 0
