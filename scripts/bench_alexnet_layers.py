#!/usr/bin/env python
"""LPIPS-alex's AlexNet layers on this CPU: XLA's conv, the im2col matmul and torch, per layer.

Each of torchvision AlexNet's five convs at a 512x512 input (and its two 3x3/2 max-pools) on a
random NHWC batch: ``lax.conv_general_dilated``, ``adcsr_jax.nn.conv.im2col_conv`` and torch's
``F.conv2d`` on NCHW memory (2 threads), best of 5 after a warm-up, with the largest difference
between them; pools as ``reduce_window``, as strided-slice maxima, and torch's ``max_pool2d``.
Shows where ``scripts/bench_eval.py``'s LPIPS-alex time goes. Run idle::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_alexnet_layers.py [BATCH]

Measured 2026-12-03 (2-core AMD EPYC, idle, batch 4), two runs (the first from this script's
earlier draft, the second as it stands): XLA conv / torch time 0.67, 0.79, 0.86, 1.01, 0.84 and
1.12, 1.38, 1.20, 1.20, 1.12 for conv0-4 (run-to-run spread larger than the gap: repeat before
concluding); im2col / torch 1.7-4.4 in both; pools 2.6-5.1 ms (``reduce_window``), 0.8-2.0 ms
(slices), 14-36 ms (torch on NCHW).

2026-12-06, same host, idle, batch 8 (both LPIPS images), one run each way: with jax 0.10's
default YNNPACK fusions (``ADCSR_XLA_DEFAULTS=0``) conv / torch 1.21, 1.44, 1.20, 1.16, 1.18;
with this project's XLA:CPU defaults (``adcsr_jax.xla_cpu``: YNNPACK off, what the script now
runs) 1.04, 1.12, 0.96, 1.16, 1.12 (conv1 124 -> 96 ms; torch 85 ms). Pools: reduce_window
3.9-5.8 ms, slices 1.6-2.0 ms (now ``models.backbones.max_pool``), torch on NCHW 23-35 ms.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from adcsr_jax.models.backbones import max_pool  # noqa: E402
from adcsr_jax.nn.conv import im2col_conv  # noqa: E402

LAYERS = [  # (name, input side, cin, cout, kernel, stride, padding) at a 512x512 image
    ("conv0 11x11/4", 512, 3, 64, 11, 4, 2),
    ("conv1 5x5", 63, 64, 192, 5, 1, 2),
    ("conv2 3x3", 31, 192, 384, 3, 1, 1),
    ("conv3 3x3", 31, 384, 256, 3, 1, 1),
    ("conv4 3x3", 31, 256, 256, 3, 1, 1),
]
POOLS = [("pool 127 x64", 127, 64), ("pool 63 x192", 63, 192)]


def best(fn, n: int = 5) -> float:
    """Seconds of the fastest of ``n`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def time_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> tuple[float, ...]:
    """(XLA conv, im2col, torch) seconds and the largest difference to torch's output."""
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    window, padding = (stride, stride), ((pad, pad), (pad, pad))
    dims = ("NHWC", "HWIO", "NHWC")
    conv = jax.jit(
        lambda a, b: jax.lax.conv_general_dilated(a, b, window, padding, dimension_numbers=dims)
    )
    mm = jax.jit(lambda a, b: im2col_conv(a, b, window, padding))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    with torch.inference_mode():
        ref = F.conv2d(xt, wt, stride=stride, padding=pad).permute(0, 2, 3, 1).numpy()
        err = max(float(np.abs(np.asarray(f(xj, wj)) - ref).max()) for f in (conv, mm))
        tc = best(lambda: conv(xj, wj).block_until_ready())
        tm = best(lambda: mm(xj, wj).block_until_ready())
        tt = best(lambda: F.conv2d(xt, wt, stride=stride, padding=pad))
    return tc, tm, tt, err


def time_pool(x: np.ndarray) -> tuple[float, float, float]:
    """(``reduce_window``, strided slices, torch ``max_pool2d``) seconds of a 3x3/2 max-pool."""
    xj = jnp.asarray(x)
    window = jax.jit(
        lambda a: jax.lax.reduce_window(
            a, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID"
        )
    )
    slices = jax.jit(lambda a: max_pool(a, 3, 2))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    if not np.array_equal(np.asarray(window(xj)), np.asarray(slices(xj))):
        raise SystemExit("bench_alexnet_layers: the two max-pools differ")
    with torch.inference_mode():
        return (
            best(lambda: window(xj).block_until_ready()),
            best(lambda: slices(xj).block_until_ready()),
            best(lambda: F.max_pool2d(xt, 3, 2)),
        )


def main() -> int:
    torch.set_num_threads(2)
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    rng = np.random.default_rng(0)
    for name, side, cin, cout, k, stride, pad in LAYERS:
        x = rng.standard_normal((batch, side, side, cin), np.float32)
        w = rng.standard_normal((k, k, cin, cout), np.float32) / np.float32(np.sqrt(k * k * cin))
        tc, tm, tt, err = time_conv(x, w, stride, pad)
        print(f"{name:<14} conv {tc * 1e3:7.1f} ms  im2col {tm * 1e3:7.1f} ms  torch "
              f"{tt * 1e3:7.1f} ms  conv/torch {tc / tt:.2f}  im2col/torch {tm / tt:.2f}  "
              f"max diff {err:.1e}", flush=True)  # fmt: skip
    for name, side, c in POOLS:
        tr, ts, tt = time_pool(rng.standard_normal((batch, side, side, c), np.float32))
        print(f"{name:<14} reduce_window {tr * 1e3:6.1f} ms  slices {ts * 1e3:6.1f} ms  "
              f"torch {tt * 1e3:6.1f} ms", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
