"""Benchmark the evaluation metrics on this machine's CPU.

Run by hand (heavy: keep other jobs off the machine):

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_eval.py [--pairs 8] [--batch 4] [--full]

Prints images/second for each metric on 512x512 pairs (warm: after compilation; RealSR pairs when
../shared/data/realsr exists, else random images), the same for plain-torch LPIPS and DISTS
(the reference forwards of richzhang/PerceptualSimilarity and dingkeyan93/DISTS, same weights,
same threads) and, with --full, the wall time of the whole RealSR evaluation
(PSNR, SSIM, LPIPS, DISTS, NIQE and FID over 100 pairs). Needs `adcsr convert metrics` first.

Measured 2026-12-02 (2 CPU cores, jax 0.10.2, torch 2.13.0, 2 threads; under the heavy-job lock,
random pairs since ../shared was not beside this checkout)::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_eval.py --skip psnr ssim niqe fid \
        --repeats 3

jax/torch images/s: LPIPS-alex 9.19 / 12.08 = 0.76, LPIPS-vgg 0.43 / 0.46 = 0.93, DISTS 0.46 /
0.44 = 1.03. On the same machine under load (other jobs running) the ratios came out 1.1-1.9 in
JAX's favour, and single VGG16 convs were as fast as torch's: the loss shows on an idle machine.
Again on a slower 2-core AMD EPYC host, 2026-12-03, idle (load 0.01), 8 RealSR pairs:
``--skip psnr ssim niqe fid lpips-vgg dists --repeats 3``: LPIPS-alex 3.39 / 4.41 = 0.77.

Those torch figures ran on channels-last views of the NHWC arrays (``permute`` without
``contiguous``), which oneDNN runs faster than the NCHW memory that ``to_tensor`` gives users of
lpips and pyiqa. Torch now runs both, alternating with JAX. 2026-12-03, idle, 8 RealSR pairs,
``--skip psnr ssim niqe fid --repeats 2``; jax / torch channels-last / torch NCHW img/s:
LPIPS-alex 8.16 / 11.76 / 10.31 (0.69 / 0.79), LPIPS-vgg 0.38 / 0.41 / 0.31 (0.94 / 1.25),
DISTS 0.41 / 0.40 / 0.31 (1.03 / 1.33). Against NCHW, VGG16 and DISTS are ahead; LPIPS-alex is
not. Layer by layer (``scripts/bench_alexnet_layers.py``, batch 4, 512x512) XLA's AlexNet convs
took 0.67-1.01x torch's NCHW time in one run and 1.12-1.38x in the next, so whether the convs
are the gap is not settled; im2col matmuls were 1.7-4.4x (no help on this host); max-pooling as
strided slices 0.8-2.0 ms against 2.6-5.1 ms for ``reduce_window``.

2026-12-06, same host, idle, same command, with max-pooling as strided slices
(``models.backbones.max_pool``) and this project's XLA:CPU defaults (``adcsr_jax.xla_cpu``:
XLA's own conv/matmul kernels instead of YNNPACK; this script applies them like ``adcsr``):
jax / torch channels-last / torch NCHW img/s: LPIPS-alex 11.18 / 11.69 / 10.30 (0.96 / 1.09),
LPIPS-vgg 0.55 / 0.46 / 0.37 (1.21 / 1.50), DISTS 0.49 / 0.41 / 0.33 (1.20 / 1.50). Against the
NCHW memory that lpips and pyiqa users feed torch, all three are ahead; LPIPS-alex is within
4 % of torch on channels-last views (its convs are 1.0-1.16x oneDNN's time, per layer).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REALSR = REPO.parent / "shared" / "data" / "realsr"
sys.path.insert(0, str(REPO))  # this checkout's adcsr_jax first
from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)


def _pairs(count: int) -> tuple[np.ndarray, np.ndarray, str]:
    from adcsr_jax.eval.evaluator import pair_images
    from adcsr_jax.image_io import read_image_pyiqa

    if (REALSR / "test_HR").is_dir():
        pairs = pair_images(REALSR / "results_osediff", REALSR / "test_HR")[:count]
        sr = np.stack([read_image_pyiqa(p.sr) for p in pairs])
        hr = np.stack([read_image_pyiqa(p.hr) for p in pairs])
        return sr, hr, "RealSR"
    rng = np.random.default_rng(0)
    hr = rng.uniform(0, 1, (count, 512, 512, 3)).astype(np.float32)
    return np.clip(hr + rng.normal(0, 0.05, hr.shape), 0, 1).astype(np.float32), hr, "random"


def _rate(fn, sr: np.ndarray, hr: np.ndarray, batch: int, repeats: int) -> float:
    """Images per second, warm: one untimed pass compiles, then the best of ``repeats``."""

    def once() -> None:
        for i in range(0, len(sr), batch):
            np.asarray(fn(sr[i : i + batch], hr[i : i + batch]))

    once()
    best = min(_timed(once) for _ in range(repeats))
    return len(sr) / best


def _rates(fns, sr: np.ndarray, hr: np.ndarray, batch: int, repeats: int) -> list[float]:
    """Like ``_rate`` for several functions, alternating them within each repeat."""

    def once(fn) -> float:
        start = time.perf_counter()
        for i in range(0, len(sr), batch):
            np.asarray(fn(sr[i : i + batch], hr[i : i + batch]))
        return time.perf_counter() - start

    for fn in fns:
        once(fn)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            best[k] = min(best[k], once(fn))
    return [len(sr) / b for b in best]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="also time the whole RealSR evaluation")
    parser.add_argument("--skip", nargs="*", default=[], help="metrics to leave out")
    args = parser.parse_args()

    import jax
    import torch

    from adcsr_jax.eval import get_metric
    from adcsr_jax.eval.fid import FIDExtractor, clean_resize
    from adcsr_jax.testing.torch_metrics import torch_dists, torch_lpips
    from adcsr_jax.weights.metrics import load_weights

    sr, hr, source = _pairs(args.pairs)
    print(
        f"{len(sr)} {source} pairs of {sr.shape[1]}x{sr.shape[2]}, batch {args.batch}, "
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    rows: list[tuple[str, float]] = []

    def report(name: str, rate: float, note: str = "") -> None:
        rows.append((name, rate))
        print(f"{name:<30} {rate:8.2f} img/s{note}", flush=True)

    for name in ("psnr", "ssim", "niqe"):
        if name not in args.skip:
            metric = get_metric(name)
            fn = metric if metric.needs_reference else (lambda a, b, m=metric: m(a))
            report(f"jax {name}", _rate(fn, sr, hr, args.batch, args.repeats))
    # JAX and torch alternate within each repeat, so load drift on a shared machine hits both.
    for name, net in (("lpips", "alex"), ("lpips-vgg", "vgg"), ("dists", None)):
        if name in args.skip:
            continue
        params = load_weights("dists" if net is None else f"lpips_{net}")
        refs = []  # torch on channels-last views of the NHWC arrays, and on NCHW memory
        for contiguous in (False, True):
            if net is None:
                refs.append(lambda a, b, p=params, c=contiguous: torch_dists(p, a, b, c))
            else:
                refs.append(lambda a, b, p=params, n=net, c=contiguous: torch_lpips(p, a, b, n, c))
        with torch.inference_mode():
            rates = _rates([get_metric(name), *refs], sr, hr, args.batch, args.repeats)
        report(f"jax {name}", rates[0])
        for layout, rate in zip(("channels-last", "NCHW"), rates[1:], strict=True):
            report(f"torch {name} {layout}", rate, f"  (jax/torch = {rates[0] / rate:.2f})")
    if "fid" not in args.skip:
        extractor = FIDExtractor(batch_size=args.batch)
        resized = np.stack([clean_resize(np.round(x * 255).astype(np.uint8)) for x in sr])
        rate = _rate(lambda a, b: extractor(a), resized, resized, args.batch, args.repeats)
        report("jax fid features", rate, " (299x299 inputs, resize excluded)")

    if args.full:
        from adcsr_jax.eval.evaluator import evaluate

        if not (REALSR / "test_HR").is_dir():
            print("no RealSR data: skipping the full evaluation")
            return 0
        start = time.perf_counter()
        result = evaluate(
            REALSR / "results_osediff",
            REALSR / "test_HR",
            metrics=["psnr", "ssim", "lpips", "dists", "niqe", "fid"],
            batch_size=args.batch,
            progress=False,
        )
        wall = time.perf_counter() - start
        summary = ", ".join(f"{k} {v:.4f}" for k, v in result.summary.items())
        print(
            f"full RealSR evaluation (100 pairs, 6 metrics incl. compilation): {wall:.1f} s; {summary}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
