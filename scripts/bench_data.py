"""Benchmark of the data path: host decode + crop, host parameter sampling, device degradation.

Run by hand (timings; on a shared machine under the heavy-job lock)::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_data.py --batches 200

Images: ``--images DIR`` or, by default, scikit-image's sample photos (written to a temp dir).
Reports:
* host: decode + 512 crop throughput (images/s) with ``--workers`` threads (the pipeline's path);
* host: degradation parameter sampling (kernels + resize matrices) per batch;
* device: degradation of a batch of ``--batch`` 512 crops, per batch, after compilation
  (batches that triggered a compilation are excluded and reported apart);
* the number of compiled programs after ``--batches`` batches.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import tempfile
import time

import jax
import numpy as np

from adcsr_jax.data.degradations import Degrader, device_args, get_preset, stage1_buckets
from adcsr_jax.data.pipeline import crop_image
from adcsr_jax.data.sources import FolderSource
from adcsr_jax.image_io import decode_image_cv2


def bench_host(src: FolderSource, crop: int, workers: int, n: int) -> float:
    def one(i: int) -> np.ndarray:
        img = decode_image_cv2(src.read(i % len(src)), src.name(i % len(src)))
        return crop_image(img, crop, np.random.default_rng(i), True)

    with cf.ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, range(min(n, 8))))  # warm file cache
        t = time.perf_counter()
        list(ex.map(one, range(n)))
        return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", help="folder of HR images (default: scikit-image samples)")
    ap.add_argument("--preset", default="adcsr")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--batches", type=int, default=200, help="batches sampled (compile count)")
    ap.add_argument(
        "--timed", type=int, default=5, help="batches executed and timed after compilation"
    )
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--host-images", type=int, default=96)
    args = ap.parse_args()

    if args.images:
        src = FolderSource(args.images)
    else:
        from adcsr_jax.data.sample_set import write_sample_images

        tmp = tempfile.mkdtemp()
        write_sample_images(tmp)
        src = FolderSource(tmp)
    report: dict = {"device": str(jax.devices()[0]), "preset": args.preset, "batch": args.batch}
    for w in sorted({1, args.workers}):
        report[f"host_decode_crop_img_per_s_{w}_threads"] = round(
            bench_host(src, args.crop, w, args.host_images), 1
        )

    cfg = get_preset(args.preset)
    deg = Degrader(cfg)
    crops = [
        crop_image(
            decode_image_cv2(src.read(i % len(src))), args.crop, np.random.default_rng(i), True
        )
        for i in range(args.batch)
    ]
    gt = np.stack(crops)
    rng = np.random.default_rng(0)
    host_times, steady, steady_cpu, compiling = [], [], [], []
    buckets_hit: dict[int, int] = {}
    executed = 0
    for step in range(args.batches):
        t0 = time.perf_counter()
        params = deg.sample(rng, args.batch, gt.shape[1:3])
        _, _, bucket = device_args(cfg, params, gt.shape[1:3])
        host_times.append(time.perf_counter() - t0)
        new_bucket = bucket not in buckets_hit
        buckets_hit[bucket] = buckets_hit.get(bucket, 0) + 1
        # Execute every batch that reaches a new bucket (it compiles), then ``--timed`` more;
        # the others only sample parameters (their programs exist already).
        if not new_bucket and len(steady) >= args.timed:
            continue
        before = deg.num_compilations()
        t1, c1 = time.perf_counter(), time.process_time()
        jax.block_until_ready(deg.apply(gt, params, jax.random.key(step))["lr"])
        dt, dc = time.perf_counter() - t1, time.process_time() - c1
        executed += 1
        if deg.num_compilations() > before:
            compiling.append(dt)
        else:
            steady.append(dt)
            steady_cpu.append(dc)
        print(
            f"batch {step}: bucket {bucket}, {dt:.3f}s, {deg.num_compilations()} programs",
            flush=True,
        )
    report.update(
        {
            "host_param_sampling_ms_per_batch": round(1e3 * statistics.median(host_times), 1),
            "device_degrade_s_per_batch_median": round(statistics.median(steady), 4)
            if steady
            else None,
            "device_degrade_s_per_batch_mean": round(statistics.fmean(steady), 4)
            if steady
            else None,
            "device_degrade_cpu_s_per_batch_median": (
                round(statistics.median(steady_cpu), 3) if steady_cpu else None
            ),
            "steady_batches": len(steady),
            "executed_batches": executed,
            "batches_with_compilation": len(compiling),
            "compile_batches_s_total": round(sum(compiling), 1),
            "programs_compiled": deg.num_compilations(),
            "program_bound": 2
            * len(stage1_buckets(args.crop, cfg.resize_range[1], cfg.resize_range[0])),
            "batches": args.batches,
            "buckets_hit": dict(sorted(buckets_hit.items())),
        }
    )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
