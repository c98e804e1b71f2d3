"""Benchmark of the data path, side by side with AdcSR's own PyTorch degrader.

Run by hand (timings; on a shared machine under the heavy-job lock)::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_data.py --batches 24

Images: ``--images DIR``, else ``../shared/data/realsr/test_HR`` (beside the checkout) when present, else
scikit-image's sample photos (written to a temp dir); ``--crop`` crops of them, ``--batch`` a batch.

Reports (JSON at the end):

* host: decode + crop throughput, and degradation parameter sampling (kernels) per batch;
* ``side_by_side``: per-batch seconds of ours (``Degrader.apply``: host matrices/taps + the jitted
  programs, compiled beforehand for every bucket the batches use) and of a torch degrader that
  follows AdcSR ``dataset.py`` ``RealESRGANDegrader.degrade`` step by step (BasicSR ``filter2D``,
  ``random_add_gaussian_noise_pt`` / ``random_add_poisson_noise_pt``, ``DiffJPEG``,
  ``F.interpolate``; written below with torch ops, ``torch.set_num_threads(--torch-threads)``), on
  the same crops, kernels and random choices (``degrade``'s draws replaced by the batch's host
  draws, so both take the same branch every batch; the noise fields are each side's own),
  alternating which runs first; medians with quartiles and extremes, the ratio of medians, the
  per-batch ratios, and how many batches took each random branch (resize up/down/keep, Gaussian
  vs Poisson, both final orders);
* ``ours_per_op``: our time per op (blur, resize, noise, JPEG, sinc) jitted alone at the sizes of
  the ``keep`` bucket and of the largest bucket, medians of ``--op-reps`` runs (the noise ops take
  their per-sample arguments traced, as in the pipeline: closed-over constants let XLA drop the
  ``cond`` and fuse the draw into the mix, a 6x slower loop that the pipeline never runs);
* ``ours_per_stage_s``: per bucket, the two jitted programs alone and the host arguments
  (``device_args``), which is where in-context fusion effects show (an op can cost more inside
  its program than alone);
* the number of compiled programs and the bound.

2026-12-06 (same command, a slower 2-core AMD EPYC host, with this project's XLA:CPU defaults,
``adcsr_jax.xla_cpu``, which this script applies like ``adcsr``): ours median 0.489 s per batch
(quartiles 0.34-0.70, range 0.24-0.95), torch 0.849 s (0.48-1.57, range 0.23-3.50); ratio of
medians 0.58, per-batch ratio median 0.65 (0.33-0.79, range 0.21-1.47); branches as above.

Neither side includes the training pair pool or the paired random crop (both are copies).

Measured (2026-12-02, jax 0.10.2, torch 2 threads, 2 shared CPU cores, under the heavy-job lock)::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_data.py --batches 24 \
        --images ../shared/data/realsr/test_HR

24 batches of 12 RealSR 512 crops (resize1 down 13 / up 9 / keep 2, noise1 Gaussian 12 /
Poisson 12, both final orders): ours median 0.398 s per batch (quartiles 0.288-0.619, range
0.244-0.745), torch median 0.843 s (0.389-1.189, range 0.201-3.026); ratio of medians
ours/torch 0.47, per-batch ratio median 0.69 (quartiles 0.36-0.93, range 0.23-1.28: above 1 only
on small-bucket batches with Gaussian noise, where torch takes 0.2-0.4 s). Per stage: stage 1
0.19 s (bucket 256) .. 0.45 s (768), stage 2 0.05-0.26 s, host arguments 0.02-0.05 s; per op
the fixed cost is the first blur (0.14 s at 512, FFT), then blur2 (0.33 s at 768 when drawn),
the first noise (0.04-0.15 s) and DiffJPEG (0.04 s at 512, 0.10 s at 768).

The same run (same command, seed, crops and draws) on the code before this branch: ours median
0.938 s (0.563-1.394, range 0.401-1.778), torch 0.857 s (0.474-1.326); ratio of medians 1.10,
per-batch ratio median 1.24 (0.69-1.68, range 0.48-2.35); stage 1 0.26 s (256) .. 1.12 s (768),
stage 2 0.15-0.47 s; DiffJPEG alone 0.12 s at 512, 0.27 s at 768.

What changed on this branch (the attributions from short checks on a loaded machine):

* ``taps.apply_taps`` columns first on the transpose (row gathers only). Before, the column
  gathers (3-float slices) were fused into the noise and clamp with a transposed layout: at
  bucket 768 stage 1 took 2.0 s and stage 2 0.5 s while the ops alone summed to ~1.0 s; after,
  1.03 s and 0.13 s (resize within 3.6e-7 of before).
* DiffJPEG's colour conversions as multiply-adds (XLA:CPU's (pixels, 3) x (3, 3) dot and the
  fused 2x2 chroma mean were 5-10x slower than elementwise loops): DiffJPEG 0.42 -> 0.15 s on 12
  RealSR 512 crops, bucket 768 stage 1 1.03 -> 0.79 s (loaded machine).
* Before both, at bucket 768 on the loaded machine: ours 2.96-3.44 s against torch 2.39-7.94 s.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from adcsr_jax.data import jpeg as J  # noqa: E402
from adcsr_jax.data.degradations import Degrader, device_args, get_preset, stage1_buckets  # noqa: E402
from adcsr_jax.data.pipeline import crop_image  # noqa: E402
from adcsr_jax.data.sources import FolderSource  # noqa: E402
from adcsr_jax.image_io import decode_image_cv2  # noqa: E402
from adcsr_jax.resize import resize_matrix  # noqa: E402

# ../shared/data beside the checkout (the project's test data), when present.
REALSR_HR = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "realsr" / "test_HR")


# ----------------------------------------------------------------------------------------------
# AdcSR's degrader, step by step, in torch (dataset.py RealESRGANDegrader.degrade + BasicSR ops)
# ----------------------------------------------------------------------------------------------


def torch_degrader(cfg, threads: int):
    """A callable ``(gt_nchw, kernel1, kernel2, sinc, params) -> lq`` (``params``: our draws)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)

    def filter2d(img, kernel):  # BasicSR img_process_util.filter2D (reshape: channels-last input)
        k = kernel.size(-1)
        b, c, h, w = img.size()
        img = F.pad(img, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
        ph, pw = img.size()[-2:]
        if kernel.size(0) == 1:
            return F.conv2d(img.reshape(b * c, 1, ph, pw), kernel.view(1, 1, k, k)).view(b, c, h, w)
        kernel = kernel.view(b, 1, k, k).repeat(1, c, 1, 1).view(b * c, 1, k, k)
        return F.conv2d(img.reshape(1, b * c, ph, pw), kernel, groups=b * c).view(b, c, h, w)

    def gray(img):  # torchvision rgb_to_grayscale, one channel
        r, g, b = img.unbind(dim=-3)
        return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)

    def gaussian_pt(img, sigma, gray_noise):  # random_add_gaussian_noise_pt, clip
        b, _, h, w = img.size()
        sigma = sigma.view(b, 1, 1, 1)
        gray_noise = gray_noise.view(b, 1, 1, 1)
        noise = torch.randn(*img.size()) * sigma / 255.0
        if torch.sum(gray_noise) > 0:
            noise_gray = (torch.randn(h, w) * sigma / 255.0).view(b, 1, h, w)
            noise = noise * (1 - gray_noise) + noise_gray * gray_noise
        return torch.clamp(img + noise, 0, 1)

    def vals_of(x):
        v = [len(torch.unique(x[i])) for i in range(x.size(0))]
        return x.new_tensor([2 ** np.ceil(np.log2(n)) for n in v]).view(-1, 1, 1, 1)

    def poisson_pt(img, scale, gray_noise):  # random_add_poisson_noise_pt, clip
        b, _, h, w = img.size()
        gray_noise = gray_noise.view(b, 1, 1, 1)
        cal_gray = torch.sum(gray_noise) > 0
        if cal_gray:
            img_gray = torch.clamp((gray(img) * 255.0).round(), 0, 255) / 255.0
            vals = vals_of(img_gray)
            noise_gray = (torch.poisson(img_gray * vals) / vals - img_gray).expand(b, 3, h, w)
        rounded = torch.clamp((img * 255.0).round(), 0, 255) / 255.0
        vals = vals_of(rounded)
        noise = torch.poisson(rounded * vals) / vals - rounded
        if cal_gray:
            noise = noise * (1 - gray_noise) + noise_gray * gray_noise
        return torch.clamp(img + noise * scale.view(b, 1, 1, 1), 0, 1)

    y_t = torch.from_numpy(J.Y_TABLE)
    c_t = torch.from_numpy(J.C_TABLE)
    dct = torch.from_numpy(J._DCT)
    dct_scale = torch.from_numpy(J._DCT_SCALE)
    idct = torch.from_numpy(J._IDCT)
    idct_alpha = torch.from_numpy(J._IDCT_ALPHA)
    rgb2ycc = torch.from_numpy(J._RGB2YCC)
    ycc2rgb = torch.from_numpy(J._YCC2RGB)

    def diff_jpeg(x, quality):  # BasicSR DiffJPEG(differentiable=False).forward
        factor = torch.where(quality < 50, 5000.0 / quality, 200.0 - quality * 2) / 100.0
        h, w = x.size()[-2:]
        hp, wp = (16 - h % 16) % 16, (16 - w % 16) % 16
        x = F.pad(x, (0, wp, 0, hp), mode="constant", value=0)
        b, _, hh, ww = x.shape
        img = x.permute(0, 2, 3, 1) * 255
        ycc = torch.tensordot(img, rgb2ycc, dims=1) + torch.tensor([0.0, 128.0, 128.0])
        planes = [ycc[..., 0]]
        for c in (1, 2):
            planes.append(F.avg_pool2d(ycc[..., c].unsqueeze(1), 2, 2).squeeze(1))
        out = []
        for i, p in enumerate(planes):
            ph, pw = p.shape[1:]
            blk = p.view(b, ph // 8, 8, -1, 8).permute(0, 1, 3, 2, 4).contiguous()
            blk = blk.view(b, -1, 8, 8)
            coef = dct_scale * torch.tensordot(blk - 128, dct, dims=2)
            table = (y_t if i == 0 else c_t).expand(b, 1, 8, 8) * factor.view(b, 1, 1, 1)
            coef = torch.round(coef / table) * table
            rec = 0.25 * torch.tensordot(coef * idct_alpha, idct, dims=2) + 128
            rec = rec.view(b, ph // 8, pw // 8, 8, 8).permute(0, 1, 3, 2, 4).contiguous()
            out.append(rec.view(b, ph, pw))
        y, cb, cr = out
        cb = cb.unsqueeze(-1).repeat(1, 1, 2, 2).view(b, hh, ww)
        cr = cr.unsqueeze(-1).repeat(1, 1, 2, 2).view(b, hh, ww)
        ycc = torch.stack([y, cb, cr], dim=3) + torch.tensor([0.0, -128.0, -128.0])
        rgb = torch.tensordot(ycc, ycc2rgb, dims=1).permute(0, 3, 1, 2)
        return (torch.clamp(rgb, 0, 255) / 255)[:, :, :h, :w]

    def noise(out, p, n):
        f = lambda k: torch.tensor(np.asarray(p[f"{k}{n}"], np.float32))  # noqa: E731
        if p[f"gauss{n}"][0]:
            return gaussian_pt(out, f("sigma"), f("gray"))
        return poisson_pt(out, f("poisson"), f("gray"))

    @torch.no_grad()
    def degrade(gt, kernel1, kernel2, sinc, p: dict):
        """``degrade`` with its random draws (``random``, ``np.random``, ``uniform_``) replaced by
        the batch's host draws ``p`` (batch granularity: element 0 of the shared choices)."""
        ori_h, ori_w = gt.size()[2:4]
        out = filter2d(gt, kernel1)
        out = F.interpolate(out, scale_factor=p["scale1"][0], mode=p["mode1"][0])
        out = noise(out, p, 1)
        out = diff_jpeg(torch.clamp(out, 0, 1), torch.tensor(np.float32(p["q1"])))
        if p["blur2"][0]:
            out = filter2d(out, kernel2)
        scale = p["scale2"][0]
        size = (int(ori_h / cfg.scale * scale), int(ori_w / cfg.scale * scale))
        out = F.interpolate(out, size=size, mode=p["mode2"][0])
        out = noise(out, p, 2)
        lr = (ori_h // cfg.scale, ori_w // cfg.scale)
        q2 = torch.tensor(np.float32(p["q2"]))
        if p["sinc_first"][0]:
            out = filter2d(F.interpolate(out, size=lr, mode=p["mode3"][0]), sinc)
            out = diff_jpeg(torch.clamp(out, 0, 1), q2)
        else:
            out = diff_jpeg(torch.clamp(out, 0, 1), q2)
            out = filter2d(F.interpolate(out, size=lr, mode=p["mode3"][0]), sinc)
        return torch.clamp((out * 255.0).round(), 0, 255) / 255.0

    return degrade


def our_branches(p: dict) -> dict:
    s = p["scale1"][0]
    s2 = p["scale2"][0]
    kind = lambda v: "up" if v > 1 else ("down" if v < 1 else "keep")  # noqa: E731
    return {
        "resize1": kind(s),
        "noise1": "gaussian" if p["gauss1"][0] else "poisson",
        "resize2": kind(s2),
        "noise2": "gaussian" if p["gauss2"][0] else "poisson",
        "order": "sinc_first" if p["sinc_first"][0] else "jpeg_first",
    }


# ----------------------------------------------------------------------------------------------
# Statistics and the per-op breakdown
# ----------------------------------------------------------------------------------------------


def spread(ts: list[float]) -> dict:
    q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
    return {
        "median": round(statistics.median(ts), 3),
        "p25": round(q[0], 3),
        "p75": round(q[2], 3),
        "min": round(min(ts), 3),
        "max": round(max(ts), 3),
        "n": len(ts),
    }


def count_branches(brs: list[dict]) -> dict:
    out: dict = {}
    for br in brs:
        for k, v in br.items():
            out.setdefault(k, {}).setdefault(v, 0)
            out[k][v] += 1
    return out


def _time(fn, args, reps: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return round(statistics.median(ts), 4)


def per_op(cfg, gt: np.ndarray, bucket1: int, reps: int) -> dict:
    """Seconds per op of our degradation, each jitted alone, stage-1 bucket ``bucket1``."""
    from adcsr_jax.data import ops
    from adcsr_jax.data import taps as T
    from adcsr_jax.data.degradations import tap_counts

    b, h, w, _ = gt.shape
    rng = np.random.default_rng(0)
    d = Degrader(cfg)
    p = d.sample(rng, b, (h, w))
    x = jnp.asarray(gt, jnp.float32) / 255
    k1 = jnp.asarray(p["kernel1"])
    t1, t2, t3, _ = tap_counts(cfg, h)
    s1 = min(bucket1, int(h * cfg.resize_range[1]))
    s2 = int(h / cfg.scale * cfg.resize_range2[1])
    lr = h // cfg.scale
    bucket2 = -(-s2 // 16) * 16

    def taps_for(n_in, n_out, pad_in, pad_out, taps):
        m = np.stack([resize_matrix(n_in, n_out, "bicubic", None, pad_in, pad_out)] * b)
        i, wt = T.matrix_taps(m, taps)
        return jnp.asarray(i), jnp.asarray(wt)

    i1 = taps_for(h, s1, None, bucket1, t1)
    i2 = taps_for(s1, s2, bucket1, bucket2, t2)
    i3 = taps_for(s2, lr, bucket2, None, t3)
    pad = max(0, bucket1 - h)
    y1 = jnp.pad(x, ((0, 0), (0, pad), (0, pad), (0, 0)))[:, :bucket1, :bucket1]
    v1 = jnp.full((b, 2), s1, jnp.int32)
    v2 = jnp.full((b, 2), s2, jnp.int32)
    y2 = y1[:, :bucket2, :bucket2]
    ones = jnp.ones(b)
    sig = jnp.full((b,), 8.0)
    q = jnp.full((b,), 80.0)
    key = jax.random.key(0)
    y3 = y1[:, :lr, :lr]
    jit = jax.jit
    gray_mix = jnp.asarray(rng.random(b) < cfg.gray_noise_prob, jnp.float32)
    return {
        f"blur1 {h}": _time(jit(ops.filter2d_fft), (x, k1), reps),
        f"resize1 {h}->{s1} (bucket {bucket1})": _time(jit(T.apply_taps), (x, *i1, *i1), reps),
        f"gaussian1 {bucket1}": _time(jit(ops.gaussian_noise), (key, y1, sig, gray_mix), reps),
        f"poisson1 {bucket1}": _time(jit(ops.poisson_noise), (key, y1, ones, gray_mix, v1), reps),
        f"jpeg1 {bucket1}": _time(jit(J.diff_jpeg_padded), (y1, q), reps),
        f"blur2 {bucket1}": _time(jit(ops.filter2d_fft), (y1, k1, v1), reps),
        f"resize2 {s1}->{s2} (bucket {bucket2})": _time(jit(T.apply_taps), (y1, *i2, *i2), reps),
        f"gaussian2 {bucket2}": _time(jit(ops.gaussian_noise), (key, y2, sig, gray_mix), reps),
        f"poisson2 {bucket2}": _time(jit(ops.poisson_noise), (key, y2, ones, gray_mix, v2), reps),
        f"resize3 {s2}->{lr}": _time(jit(T.apply_taps), (y2, *i3, *i3), reps),
        f"sinc {lr}": _time(jit(ops.filter2d_fft), (y3, k1), reps),
        f"jpeg2 {lr}": _time(jit(J.diff_jpeg), (y3, q), reps),
        f"jpeg2 padded {bucket2}": _time(jit(J.diff_jpeg_padded), (y2, q), reps),
    }


def per_stage(deg: Degrader, gt: np.ndarray, p: dict, reps: int) -> dict:
    """Seconds of the two jitted programs alone (inputs on the device; medians of ``reps``)."""
    hw = (gt.shape[1], gt.shape[2])
    a1, a2, _ = device_args(deg.config, p, hw)
    a1 = {k: jnp.asarray(v) for k, v in a1.items()}
    a2 = {k: jnp.asarray(v) for k, v in a2.items()}
    x = jnp.asarray(gt, jnp.float32) / 255
    key = jax.random.key(0)
    out_hw = (hw[0] // deg.config.scale, hw[1] // deg.config.scale)
    y = deg._stage1(x, a1, key)
    t = time.perf_counter()
    host = [device_args(deg.config, p, hw) for _ in range(reps)]
    host_s = (time.perf_counter() - t) / len(host)
    return {
        "host_device_args": round(host_s, 4),
        "stage1": _time(deg._stage1, (x, a1, key), reps),
        "stage2": _time(deg._stage2, (y, a2, key, out_hw), reps),
    }


def run_ours(deg: Degrader, gt: np.ndarray, p: dict, key: jax.Array) -> float:
    t = time.perf_counter()
    jax.block_until_ready(deg.apply(gt, p, key)["lr"])
    return time.perf_counter() - t


def run_torch(tdeg, gt: np.ndarray, p: dict) -> float:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(gt.transpose(0, 3, 1, 2))).float() / 255
    ks = [torch.from_numpy(np.asarray(p[k])) for k in ("kernel1", "kernel2", "sinc")]
    t = time.perf_counter()
    tdeg(x, *ks, p)
    return time.perf_counter() - t


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
    ap.add_argument("--images", help="folder of HR images (default: RealSR test_HR or skimage)")
    ap.add_argument("--preset", default="adcsr")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--batches", type=int, default=24, help="batches timed side by side")
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--op-reps", type=int, default=3, help="runs per op in the breakdown")
    ap.add_argument("--no-torch", action="store_true", help="time ours only")
    ap.add_argument("--no-ops", action="store_true", help="skip the per-op breakdown")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--host-images", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    images = args.images or (REALSR_HR if os.path.isdir(REALSR_HR) else None)
    if images:
        src = FolderSource(images)
    else:
        from adcsr_jax.data.sample_set import write_sample_images

        tmp = tempfile.mkdtemp()
        write_sample_images(tmp)
        src = FolderSource(tmp)
    cfg = get_preset(args.preset)
    report: dict = {
        "device": str(jax.devices()[0]),
        "images": images or "skimage samples",
        "preset": args.preset,
        "batch": args.batch,
        "crop": args.crop,
        "torch_threads": args.torch_threads,
    }
    report["host_decode_crop_img_per_s"] = round(
        bench_host(src, args.crop, args.workers, args.host_images), 1
    )
    n_img = args.batch * args.batches
    crops = np.stack(
        [
            crop_image(
                decode_image_cv2(src.read(i % len(src))), args.crop, np.random.default_rng(i), True
            )
            for i in range(min(n_img, max(len(src), args.batch)))
        ]
    )
    gts = [
        crops[[(i * args.batch + j) % len(crops) for j in range(args.batch)]]
        for i in range(args.batches)
    ]
    deg = Degrader(cfg)
    rng = np.random.default_rng(args.seed)
    hw = (args.crop, args.crop)
    t0 = time.perf_counter()
    params = [deg.sample(rng, args.batch, hw) for _ in range(args.batches)]
    report["host_param_sampling_ms_per_batch"] = round(
        1e3 * (time.perf_counter() - t0) / args.batches, 1
    )
    buckets = [device_args(cfg, p, hw)[2] for p in params]

    # Compile every program the timed batches use (one batch per distinct bucket).
    t0 = time.perf_counter()
    for bucket in sorted(set(buckets)):
        i = buckets.index(bucket)
        jax.block_until_ready(deg.apply(gts[i], params[i], jax.random.key(0))["lr"])
    report["compile_s"] = round(time.perf_counter() - t0, 1)
    compiled = deg.num_compilations()

    tdeg = None if args.no_torch else torch_degrader(cfg, args.torch_threads)
    ours, theirs, ratios, branches = [], [], [], []
    for i, (gt, p) in enumerate(zip(gts, params)):
        key = jax.random.key(i + 1)
        if tdeg is None:
            a, c = run_ours(deg, gt, p, key), None
        elif i % 2 == 0:
            a, c = run_ours(deg, gt, p, key), run_torch(tdeg, gt, p)
        else:
            c = run_torch(tdeg, gt, p)
            a = run_ours(deg, gt, p, key)
        ours.append(a)
        branches.append(our_branches(p))
        msg = f"batch {i}: bucket {buckets[i]}, ours {a:.3f}s"
        if c is not None:
            theirs.append(c)
            ratios.append(a / c)
            msg += f", torch {c:.3f}s, ratio {a / c:.2f} ({branches[-1]})"
        print(msg, flush=True)
    side = {"ours_s": spread(ours), "branches": count_branches(branches)}
    if theirs:
        side["torch_s"] = spread(theirs)
        side["ratio_of_medians_ours_over_torch"] = round(
            statistics.median(ours) / statistics.median(theirs), 3
        )
        side["per_batch_ratio"] = spread(ratios)
    report["side_by_side"] = side
    report["programs_compiled"] = compiled
    report["ours_per_stage_s"] = {
        f"bucket {b}": per_stage(deg, gts[buckets.index(b)], params[buckets.index(b)], 3)
        for b in sorted(set(buckets))
    }
    report["programs_after_timing"] = deg.num_compilations()
    report["program_bound"] = 2 * len(
        stage1_buckets(args.crop, cfg.resize_range[1], cfg.resize_range[0])
    )
    report["buckets_hit"] = {b: buckets.count(b) for b in sorted(set(buckets))}
    if not args.no_ops:
        all_b = stage1_buckets(args.crop, cfg.resize_range[1], cfg.resize_range[0])
        keep, top = min(b for b in all_b if b >= args.crop), all_b[-1]
        report["ours_per_op_s"] = {
            f"bucket {b}": per_op(cfg, gts[0], b, args.op_reps) for b in sorted({keep, top})
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
