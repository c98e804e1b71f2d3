"""The Real-ESRGAN second-order degradation: parameters sampled on the host, applied jitted in JAX.

Pipeline (BasicSR / Real-ESRGAN ``feed_data``, AdcSR ``RealESRGANDegrader.degrade``), GT in [0, 1]:

1. [``realesrgan`` only] USM-sharpen the GT; the sharpened GT is the input of the chain.
2. Blur (kernel 1) -> random resize (up/down/keep, ``scale_factor`` semantics, area/bilinear/bicubic)
   -> Gaussian or Poisson noise (colour or grey) -> clamp -> DiffJPEG (quality 1).
3. Blur (kernel 2) with ``second_blur_prob`` -> random resize to ``int(H / 4 * s2)`` -> noise ->
   in random order [resize to H/4 + final sinc] and [clamp + DiffJPEG (quality 2)].
4. [``osediff`` only] resize back to the GT size with a random mode.
5. ``clamp(round(x * 255), 0, 255) / 255``.

Presets: ``adcsr`` (default; AdcSR ``config.yml``), ``osediff``
(``params_realesrgan.yml``, LR resized back to the GT size) and ``realesrgan`` (x4plus, USM GT).
Randomness granularity follows the reference that each preset copies: ``batch`` (the GPU
``feed_data`` of Real-ESRGAN/AdcSR: resize scale and mode, noise type, second-blur coin and final
order are shared by the batch; sigma, grey flag, Poisson scale, JPEG quality and kernels are per
sample; the grey Gaussian field is one ``randn(h, w)`` for the batch) or ``sample`` (OSEDiff
degrades one image at a time on the CPU: everything per sample).

Bounded compilation (size buckets)
----------------------------------
The first random resize gives ``floor(H * s)`` with ``s`` in e.g. [0.3, 1.5] (154..768 px for a 512
GT), the second ``int(H / 4 * s2)``; a program per size would compile hundreds of times. Instead:

* Resizes use host-built interpolation matrices (``adcsr_jax.resize.resize_matrix``), zero-padded
  to a fixed **bucket** size, applied as banded taps (``taps``: a few gathers per output row, not a
  dense matmul); the tap counts are static per config (``tap_counts``). The size after the first
  resize is rounded up to the next bucket of
  ``stage1_buckets(H)``: multiples of 16 at 5/16, 1/2, 5/8, 3/4, 7/8, 1, 5/4, 3/2 of H (8 buckets,
  160..768 for H = 512; at most (bucket / size)^2 ~ 1.5x padding work except below 5/16 H).
  The second stage always uses one bucket: ``ceil16(int(H / 4 * max s2))`` (160 for H = 512).
* Every op after a resize knows each sample's true ``(h, w)`` (``valid``): reflect padding of
  ``filter2d`` reflects at the true border, Poisson counts distinct levels over true pixels only,
  and JPEG input is zeroed beyond the true size, which is exactly the zero padding to 16 of DiffJPEG.
  Values outside the true region never reach a true output pixel (zero matrix columns).
* The pipeline is two jitted programs: ``stage 1`` (GT -> first-order output, keyed by the stage-1
  bucket) and ``stage 2`` (-> LR, keyed by the stage-1 bucket); coins (second blur, final order,
  Gaussian vs Poisson) are traced values, not Python branches. For a fixed GT size and batch size
  the number of compilations is therefore at most ``2 * len(stage1_buckets)`` (+1 for USM),
  whatever the number of batches (``Degrader.compiled_shapes`` counts them; a test checks it).

Outputs are identical to the unpadded computation up to float summation order.

Speed (CPU): blurs are FFT correlations (``ops.filter2d_fft``, within ~2e-6 of the direct sum);
filters that are pulses for every sample are skipped (``lax.cond``; per sample ``where``, so a
pulse stays an exact identity); Poisson counts are alias-table lookups (``poisson``) and noise
bits come from a fused Threefry (``rng``); resizes gather whole rows, columns first on the
transpose (``taps.apply_taps``); DiffJPEG's colour conversions are elementwise multiply-adds
(``jpeg``); ``scripts/bench_data.py`` times it against AdcSR's torch degrader.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.data import kernels as K
from adcsr_jax.data import ops
from adcsr_jax.data import taps as T
from adcsr_jax.data.jpeg import diff_jpeg, diff_jpeg_padded
from adcsr_jax.data.ops import (
    filter2d,
    filter2d_fft,
    gaussian_noise,
    poisson_noise,
    quantize_8bit,
    usm_sharp,
)
from adcsr_jax.resize import MODES, resize, resize_matrix

__all__ = [
    "PRESETS",
    "DegradationConfig",
    "Degrader",
    "diff_jpeg",
    "filter2d",
    "gaussian_noise",
    "get_preset",
    "poisson_noise",
    "quantize_8bit",
    "resize",
    "stage1_buckets",
    "usm_sharp",
]

_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


@dataclasses.dataclass(frozen=True)
class DegradationConfig:
    """All knobs of the second-order degradation (names follow the BasicSR option files)."""

    scale: int = 4
    # first degradation
    kernel_prob: tuple[float, ...] = _KERNEL_PROB
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    betag_range: tuple[float, float] = (0.5, 2.0)
    betap_range: tuple[float, float] = (1.0, 1.5)
    sinc_prob: float = 0.1
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.3, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 15.0)
    poisson_scale_range: tuple[float, float] = (0.05, 2.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (60.0, 95.0)
    # second degradation
    second_blur_prob: float = 0.5
    kernel_prob2: tuple[float, ...] = _KERNEL_PROB
    blur_sigma2: tuple[float, float] = (0.2, 1.0)
    betag_range2: tuple[float, float] = (0.5, 2.0)
    betap_range2: tuple[float, float] = (1.0, 1.5)
    sinc_prob2: float = 0.1
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.6, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 12.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 1.0)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (60.0, 100.0)
    final_sinc_prob: float = 0.8
    # variants
    usm_gt: bool = False  # Real-ESRGAN: USM-sharpened GT feeds the chain (and is returned)
    resize_back: bool = False  # OSEDiff: LR resized back to the GT size with a random mode
    granularity: str = "batch"  # "batch" (GPU feed_data) or "sample" (OSEDiff, per image)
    gt_size: int = 512  # crop the pipeline feeds in (Real-ESRGAN crops 400, trains on 256)
    # GT size after degradation: one paired random crop of (GT, LR) per batch, before the pool
    # (Real-ESRGAN feed_data's paired_random_crop, 400 -> 256); None keeps the whole crop.
    train_crop: int | None = None
    pool_size: int = 1200  # pair pool; 0 disables it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Real-ESRGAN x4plus degradation numbers, shared by OSEDiff's params_realesrgan.yml.
_X4PLUS = DegradationConfig(
    blur_sigma=(0.2, 3.0),
    betag_range=(0.5, 4.0),
    betap_range=(1.0, 2.0),
    resize_range=(0.15, 1.5),
    noise_range=(1.0, 30.0),
    poisson_scale_range=(0.05, 3.0),
    jpeg_range=(30.0, 95.0),
    second_blur_prob=0.8,
    blur_sigma2=(0.2, 1.5),
    betag_range2=(0.5, 4.0),
    betap_range2=(1.0, 2.0),
    resize_range2=(0.3, 1.2),
    noise_range2=(1.0, 25.0),
    poisson_scale_range2=(0.05, 2.5),
    jpeg_range2=(30.0, 95.0),
)

PRESETS: dict[str, DegradationConfig] = {
    "adcsr": DegradationConfig(),
    "osediff": dataclasses.replace(_X4PLUS, resize_back=True, granularity="sample", pool_size=0),
    "realesrgan": dataclasses.replace(
        _X4PLUS, usm_gt=True, gt_size=400, train_crop=256, pool_size=180
    ),
}


def get_preset(name: str, **overrides: Any) -> DegradationConfig:
    """A preset by name, with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown degradation preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def _ceil16(n: int) -> int:
    return -(-n // 16) * 16


def stage1_buckets(size: int, max_scale: float = 1.5, min_scale: float = 0.0) -> tuple[int, ...]:
    """Bucket sizes (multiples of 16) for the size after the first resize of a ``size`` GT.

    Buckets that no size in ``[floor(size * min_scale), floor(size * max_scale)]`` would use
    are dropped.
    """
    ratios = (5 / 16, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0, 5 / 4, 3 / 2)
    top = _ceil16(int(math.floor(size * max_scale)))
    out = sorted(
        {min(_ceil16(int(round(size * r))), top) for r in ratios if r <= max_scale} | {top}
    )
    low = int(math.floor(size * min_scale))
    return tuple(b for i, b in enumerate(out) if i == len(out) - 1 or out[i] >= low)


def _bucket_for(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if n <= b:
            return b
    raise ValueError(f"size {n} exceeds the largest bucket {buckets[-1]}")


# ----------------------------------------------------------------------------------------------
# Host-side parameter sampling
# ----------------------------------------------------------------------------------------------


def _resize_scale(rng: np.random.Generator, probs: Sequence[float], rng_range: Sequence[float]):
    kind = rng.choice(3, p=np.asarray(probs) / sum(probs))
    if kind == 0:
        return float(rng.uniform(1, rng_range[1]))
    if kind == 1:
        return float(rng.uniform(rng_range[0], 1))
    return 1.0


def _draw(rng: np.random.Generator, n: int, per_sample: bool, fn) -> list:
    """``n`` values from ``fn(rng)``: independent per sample, or one repeated for the batch."""
    if per_sample:
        return [fn(rng) for _ in range(n)]
    return [fn(rng)] * n


def sample_params(
    cfg: DegradationConfig, rng: np.random.Generator, batch: int, hw: tuple[int, int]
) -> dict[str, Any]:
    """All random choices of one batch, as numpy arrays (per sample) and Python values."""
    h, w = hw
    per = cfg.granularity == "sample"
    if cfg.granularity not in ("batch", "sample"):
        raise ValueError(f"granularity must be 'batch' or 'sample', got {cfg.granularity!r}")
    uni = lambda lo_hi: lambda r: float(r.uniform(lo_hi[0], lo_hi[1]))  # noqa: E731
    coin = lambda p: lambda r: bool(r.uniform() < p)  # noqa: E731
    mode = lambda r: MODES[int(r.integers(3))]  # noqa: E731

    k1 = np.stack(
        [
            K.sample_blur_kernel(
                rng,
                cfg.kernel_prob,
                cfg.blur_sigma,
                cfg.betag_range,
                cfg.betap_range,
                cfg.sinc_prob,
            )
            for _ in range(batch)
        ]
    )
    k2 = np.stack(
        [
            K.sample_blur_kernel(
                rng,
                cfg.kernel_prob2,
                cfg.blur_sigma2,
                cfg.betag_range2,
                cfg.betap_range2,
                cfg.sinc_prob2,
            )
            for _ in range(batch)
        ]
    )
    sinc = np.stack([K.sample_final_sinc(rng, cfg.final_sinc_prob) for _ in range(batch)])
    p = {
        "kernel1": k1,
        "kernel2": k2,
        "sinc": sinc,
        "scale1": _draw(
            rng, batch, per, lambda r: _resize_scale(r, cfg.resize_prob, cfg.resize_range)
        ),
        "mode1": _draw(rng, batch, per, mode),
        "gauss1": _draw(rng, batch, per, coin(cfg.gaussian_noise_prob)),
        "sigma1": [uni(cfg.noise_range)(rng) for _ in range(batch)],
        "poisson1": [uni(cfg.poisson_scale_range)(rng) for _ in range(batch)],
        "gray1": [coin(cfg.gray_noise_prob)(rng) for _ in range(batch)],
        "q1": [uni(cfg.jpeg_range)(rng) for _ in range(batch)],
        "blur2": _draw(rng, batch, per, coin(cfg.second_blur_prob)),
        "scale2": _draw(
            rng, batch, per, lambda r: _resize_scale(r, cfg.resize_prob2, cfg.resize_range2)
        ),
        "mode2": _draw(rng, batch, per, mode),
        "gauss2": _draw(rng, batch, per, coin(cfg.gaussian_noise_prob2)),
        "sigma2": [uni(cfg.noise_range2)(rng) for _ in range(batch)],
        "poisson2": [uni(cfg.poisson_scale_range2)(rng) for _ in range(batch)],
        "gray2": [coin(cfg.gray_noise_prob2)(rng) for _ in range(batch)],
        "sinc_first": _draw(rng, batch, per, coin(0.5)),
        "mode3": _draw(rng, batch, per, mode),
        "q2": [uni(cfg.jpeg_range2)(rng) for _ in range(batch)],
        "mode4": _draw(rng, batch, per, mode),
    }
    # Sizes: stage 1 uses scale_factor (floor(h * s)); stage 2 uses int(h / scale * s2).
    p["size1"] = [(int(math.floor(h * s)), int(math.floor(w * s))) for s in p["scale1"]]
    p["size2"] = [(int(h / cfg.scale * s), int(w / cfg.scale * s)) for s in p["scale2"]]
    return p


# ----------------------------------------------------------------------------------------------
# Device-side programs
# ----------------------------------------------------------------------------------------------


def _noise(key, x, gauss, sigma, pscale, gray, valid, kinds):
    """Gaussian or Poisson noise per sample, then clamp.

    ``kinds = (shared_gray_field, may_gauss, may_poisson)`` is static: a noise type whose
    probability is 0 is not compiled; at run time a branch no sample uses is skipped (``cond``).
    """
    shared_gray, may_gauss, may_poisson = kinds
    k_g, k_p = jax.random.split(key)
    zeros = jnp.zeros_like(x)
    g = p = zeros
    if may_gauss:
        g = jax.lax.cond(
            jnp.any(gauss), lambda: gaussian_noise(k_g, x, sigma, gray, shared_gray), lambda: zeros
        )
    if may_poisson:
        p = jax.lax.cond(
            jnp.any(~gauss), lambda: poisson_noise(k_p, x, pscale, gray, valid), lambda: zeros
        )
    return jnp.clip(x + jnp.where(gauss[:, None, None, None], g, p), 0.0, 1.0)


def _resize(x, a, n):
    return T.apply_taps(x, a[f"ih{n}"], a[f"wh{n}"], a[f"iw{n}"], a[f"ww{n}"])


def _filter_where(x, kernel, on, valid=None):
    """``filter2d`` on the samples where ``on``; the others pass through unchanged (pulse)."""
    blurred = lambda: jnp.where(on[:, None, None, None], filter2d_fft(x, kernel, valid), x)  # noqa: E731
    return jax.lax.cond(jnp.any(on), blurred, lambda: x)


def _stage1(gt, a, key, kinds):
    """Blur -> resize (bucket) -> noise -> JPEG. Output zero beyond each sample's true size."""
    x = filter2d_fft(gt, a["kernel1"])
    x = _resize(x, a, 1)
    x = _noise(key, x, a["gauss1"], a["sigma1"], a["poisson1"], a["gray1"], a["valid1"], kinds)
    x = x * ops.valid_mask(x.shape, a["valid1"])
    return diff_jpeg_padded(x, a["q1"])


def _stage2(x, a, key, kinds, resize_back, out_hw):
    """Second blur -> resize -> noise -> final [resize + sinc] / JPEG in either order -> 8 bits."""
    x = _filter_where(x, a["kernel2"], a["blur2"], a["valid1"])
    x = _resize(x, a, 2)
    x = _noise(key, x, a["gauss2"], a["sigma2"], a["poisson2"], a["gray2"], a["valid2"], kinds)

    def sinc_then_jpeg():
        y = _filter_where(_resize(x, a, 3), a["sinc"], a["sinc_on"])
        return diff_jpeg(jnp.clip(y, 0.0, 1.0), a["q2"])

    def jpeg_then_sinc():
        y = jnp.clip(x, 0.0, 1.0) * ops.valid_mask(x.shape, a["valid2"])
        y = diff_jpeg_padded(y, a["q2"])
        return _filter_where(_resize(y, a, 3), a["sinc"], a["sinc_on"])

    first = a["sinc_first"]
    zeros = jnp.zeros((x.shape[0], *out_hw, x.shape[-1]), jnp.float32)
    out_a = jax.lax.cond(jnp.any(first), sinc_then_jpeg, lambda: zeros)
    out_b = jax.lax.cond(jnp.any(~first), jpeg_then_sinc, lambda: zeros)
    out = jnp.where(first[:, None, None, None], out_a, out_b)
    if resize_back:
        out = _resize(out, a, 4)
    return quantize_8bit(out)


def _matrices(sizes_in, sizes_out, modes, scales, pad_in, pad_out) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``(B, out, in)`` row and column resize matrices (``resize.resize_matrix``)."""
    rh = np.stack(
        [
            resize_matrix(i[0], o[0], m, s, pad_in, pad_out)
            for i, o, m, s in zip(sizes_in, sizes_out, modes, scales)
        ]
    )
    rw = np.stack(
        [
            resize_matrix(i[1], o[1], m, s, pad_in, pad_out)
            for i, o, m, s in zip(sizes_in, sizes_out, modes, scales)
        ]
    )
    return rh, rw


def _taps(n: int, taps: int, rh: np.ndarray, rw: np.ndarray) -> dict[str, np.ndarray]:
    """The resize matrices of step ``n`` as ``taps``-wide bands (``taps.matrix_taps``)."""
    ih, wh = T.matrix_taps(rh, taps)
    iw, ww = T.matrix_taps(rw, taps)
    return {f"ih{n}": ih, f"wh{n}": wh, f"iw{n}": iw, f"ww{n}": ww}


def tap_counts(cfg: DegradationConfig, size: int) -> tuple[int, int, int, int]:
    """Static band widths of the four resizes of a ``size`` GT (from the config's scale ranges)."""
    lo1, hi1 = cfg.resize_range
    lo2, hi2 = cfg.resize_range2
    s1_min, s1_max = int(math.floor(size * lo1)), int(math.floor(size * hi1))
    s2_min, s2_max = int(size / cfg.scale * lo2), int(size / cfg.scale * hi2)
    lr = size // cfg.scale
    return (
        T.max_taps(size, s1_min),
        T.max_taps(max(size, s1_max), s2_min),
        T.max_taps(max(lr, s2_max), lr),
        T.max_taps(lr, size),
    )


def _is_pulse(kernel: np.ndarray) -> bool:
    return bool(np.array_equal(kernel, K.pulse_kernel(kernel.shape[-1])))


def device_args(cfg: DegradationConfig, p: dict[str, Any], hw: tuple[int, int]):
    """Turns host parameters into the array arguments of the two programs and the stage-1 bucket."""
    h, w = hw
    b = len(p["q1"])
    buckets = stage1_buckets(max(h, w), cfg.resize_range[1], cfg.resize_range[0])
    bucket1 = max(_bucket_for(max(s), buckets) for s in p["size1"])
    bucket2 = _ceil16(int(max(h, w) / cfg.scale * cfg.resize_range2[1]))
    out_hw = (h // cfg.scale, w // cfg.scale)
    # Stage 1 passes scale_factor to interpolate (the coordinate map uses 1 / s).
    sf = [float(s) for s in p["scale1"]]
    rh1, rw1 = _matrices([hw] * b, p["size1"], p["mode1"], sf, None, bucket1)
    rh2, rw2 = _matrices(p["size1"], p["size2"], p["mode2"], [None] * b, bucket1, bucket2)
    rh3, rw3 = _matrices(p["size2"], [out_hw] * b, p["mode3"], [None] * b, bucket2, None)
    t1, t2, t3, t4 = tap_counts(cfg, max(h, w))
    f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731
    a1 = {
        "kernel1": p["kernel1"],
        **_taps(1, t1, rh1, rw1),
        "valid1": np.asarray(p["size1"], np.int32),
        "gauss1": np.asarray(p["gauss1"], bool),
        "sigma1": f32(p["sigma1"]),
        "poisson1": f32(p["poisson1"]),
        "gray1": f32(p["gray1"]),
        "q1": f32(p["q1"]),
    }
    a2 = {
        "valid1": a1["valid1"],
        "kernel2": p["kernel2"],
        "blur2": np.asarray(p["blur2"], bool),
        **_taps(2, t2, rh2, rw2),
        "valid2": np.asarray(p["size2"], np.int32),
        "gauss2": np.asarray(p["gauss2"], bool),
        "sigma2": f32(p["sigma2"]),
        "poisson2": f32(p["poisson2"]),
        "gray2": f32(p["gray2"]),
        "sinc": p["sinc"],
        "sinc_on": np.asarray([not _is_pulse(k) for k in p["sinc"]], bool),
        "sinc_first": np.asarray(p["sinc_first"], bool),
        **_taps(3, t3, rh3, rw3),
        "q2": f32(p["q2"]),
    }
    if cfg.resize_back:
        rh4, rw4 = _matrices([out_hw] * b, [hw] * b, p["mode4"], [None] * b, None, None)
        a2.update(_taps(4, t4, rh4, rw4))
    return a1, a2, bucket1


class Degrader:
    """Applies the second-order degradation to batches of GT crops.

    ``sample(rng, batch)`` draws a batch's parameters on the host (numpy); ``apply(gt, params,
    key)`` runs the jitted device programs and returns ``{"lr", "gt"}`` (plus ``"gt_usm"`` for the
    ``realesrgan`` preset), all NHWC float32 in [0, 1]. ``__call__`` does both. ``sharding`` (for
    example a ``NamedSharding`` over the host's local devices, batch axis first) spreads the work.
    """

    def __init__(self, config: DegradationConfig | str = "adcsr", sharding: Any | None = None):
        self.config = get_preset(config) if isinstance(config, str) else config
        self.sharding = sharding
        cfg = self.config
        shared = cfg.granularity == "batch"
        kinds1 = (shared, cfg.gaussian_noise_prob > 0, cfg.gaussian_noise_prob < 1)
        kinds2 = (shared, cfg.gaussian_noise_prob2 > 0, cfg.gaussian_noise_prob2 < 1)
        back = cfg.resize_back
        self._usm = jax.jit(usm_sharp)
        self._stage1 = jax.jit(lambda gt, a, key: _stage1(gt, a, key, kinds1))
        self._stage2 = jax.jit(
            lambda x, a, key, out_hw: _stage2(x, a, key, kinds2, back, out_hw),
            static_argnums=3,
        )

    def sample(
        self, rng: np.random.Generator, batch: int, hw: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """Host-side random parameters of one batch."""
        hw = hw or (self.config.gt_size, self.config.gt_size)
        return sample_params(self.config, rng, batch, hw)

    def apply(
        self, gt: jax.Array | np.ndarray, params: dict[str, Any], key: jax.Array
    ) -> dict[str, jax.Array]:
        """Degrades NHWC ``gt`` (float in [0, 1], or uint8) with host-drawn ``params``."""
        if gt.ndim != 4 or gt.shape[-1] != 3:
            raise ValueError(f"gt must be (B, H, W, 3), got {gt.shape}")
        hw = (int(gt.shape[1]), int(gt.shape[2]))
        if hw[0] % (4 * self.config.scale) or hw[1] % (4 * self.config.scale):
            raise ValueError(f"GT size {hw} must be a multiple of {4 * self.config.scale}")
        if len(params["q1"]) != gt.shape[0]:
            raise ValueError(f"params are for {len(params['q1'])} samples, gt has {gt.shape[0]}")
        gt = self._put(gt)
        gt = gt.astype(jnp.float32) / 255.0 if gt.dtype == jnp.uint8 else gt.astype(jnp.float32)
        a1, a2, _ = device_args(self.config, params, hw)
        out_hw = (hw[0] // self.config.scale, hw[1] // self.config.scale)
        a1 = {k: self._put(v) for k, v in a1.items()}
        a2 = {k: self._put(v) for k, v in a2.items()}
        k1, k2 = jax.random.split(key)
        result = {"gt": gt}
        x = gt
        if self.config.usm_gt:
            x = self._usm(gt, jnp.asarray(K.usm_kernel()))
            result["gt_usm"] = x
        x = self._stage1(x, a1, k1)
        result["lr"] = self._stage2(x, a2, k2, out_hw)
        return result

    def _put(self, v: Any) -> jax.Array:
        if self.sharding is None:
            return jnp.asarray(v)
        return jax.device_put(v, self.sharding)

    def __call__(self, gt, rng: np.random.Generator, key: jax.Array) -> dict[str, jax.Array]:
        params = self.sample(rng, gt.shape[0], (int(gt.shape[1]), int(gt.shape[2])))
        return self.apply(gt, params, key)

    def num_compilations(self) -> int:
        """Distinct programs traced so far (sum of the jit cache sizes)."""
        return sum(f._cache_size() for f in (self._usm, self._stage1, self._stage2))
