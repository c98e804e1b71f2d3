"""XLA:CPU flags this project sets by default on x86-64 hosts, through ``XLA_FLAGS``.

jax 0.10's XLA:CPU hands convolutions and dots to YNNPACK fusions by default
(``--xla_cpu_experimental_ynn_fusion_type``). On the AVX-512 x86 hosts we benchmark on, XLA's
own (Eigen) kernels were faster in every case we measured: LPIPS-alex's 5x5 conv at batch 8
126 -> 98 ms (torch/oneDNN: 86 ms), a 4096x1280x1280 matmul 75 -> 65 ms, the whole LPIPS-alex
forward 1.0x -> 0.8x torch's time, the SD 2.1 UNet forward 5.63 -> 5.30 s
(``scripts/bench_eval.py``, ``scripts/bench_unet.py``, ``scripts/bench_alexnet_layers.py``).
So the ``adcsr`` command, the benchmarks and the tests turn YNNPACK off.

XLA reads ``XLA_FLAGS`` once, when jax creates its CPU client, so :func:`apply` must run before
the first computation; it never overrides a flag the user's ``XLA_FLAGS`` already sets, does
nothing on other architectures (where YNNPACK may well be the faster choice) and nothing when
``ADCSR_XLA_DEFAULTS=0``. Library users who want the same speed call it at start-up. This
module imports nothing heavy, so the command line can use it before jax is loaded.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping

# flag -> value; an empty value is a valid setting (here: no YNNPACK fusion of any kind).
DEFAULTS: dict[str, str] = {"--xla_cpu_experimental_ynn_fusion_type": ""}
X86 = ("x86_64", "amd64")


def with_defaults(flags: str) -> str:
    """``flags`` (an ``XLA_FLAGS`` string) plus every default flag it does not already set."""
    present = {flag.split("=", 1)[0] for flag in flags.split()}
    extra = [f"{name}={value}" for name, value in DEFAULTS.items() if name not in present]
    return " ".join([*flags.split(), *extra])


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def apply(environ: MutableMapping[str, str] | None = None, machine: str | None = None) -> bool:
    """Add :data:`DEFAULTS` to ``XLA_FLAGS`` in ``environ`` (default ``os.environ``).

    Returns whether the flags were added: not on a non-x86 ``machine`` (default: this one's),
    not with ``ADCSR_XLA_DEFAULTS=0``, and not once jax's backends exist in this process (the
    flags could no longer act; a later child process still inherits them).
    """
    environ = os.environ if environ is None else environ
    machine = (machine or platform.machine()).lower()
    if environ.get("ADCSR_XLA_DEFAULTS", "1") == "0" or machine not in X86:
        return False
    environ["XLA_FLAGS"] = with_defaults(environ.get("XLA_FLAGS", ""))
    return not (environ is os.environ and _backend_started())
