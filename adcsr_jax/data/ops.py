"""Device-side image ops of the Real-ESRGAN degradation: pure, jittable functions on NHWC float32.

* ``filter2d``: BasicSR ``filter2D`` (reflect padding ``k // 2``, one kernel per sample applied to
  every channel, cross-correlation like ``F.conv2d``).
* ``gaussian_noise`` / ``poisson_noise``: BasicSR's ``*_pt`` noise generators with the per-sample
  parameters passed in (they are drawn on the host).
* ``usm_sharp``: Real-ESRGAN's ``USMSharp`` (used by the ``realesrgan`` preset for its GT).
* ``quantize_8bit``: the final ``clamp(round(x * 255), 0, 255) / 255``.

Functions that take ``valid`` work on arrays padded to a bucket size: ``valid`` holds the true
``(height, width)`` of each sample (``(B, 2)`` int32); pixels beyond it are padding and are
ignored (reflection happens at the true border, statistics only count true pixels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from adcsr_jax.data import poisson as _poisson
from adcsr_jax.data import rng as _rng

_HP = jax.lax.Precision.HIGHEST
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale


def _reflect_index(n_out: int, pad: int, valid: jax.Array, size: int) -> jax.Array:
    """Source indices of a reflect-padded axis: ``(B, n_out)`` for per-sample true lengths."""
    pos = jnp.arange(n_out)[None, :] - pad
    n = valid[:, None]
    src = jnp.where(pos < 0, -pos, pos)
    src = jnp.where(src >= n, 2 * (n - 1) - src, src)
    return jnp.clip(src, 0, size - 1)


def reflect_pad(x: jax.Array, pad: int, valid: jax.Array | None = None) -> jax.Array:
    """``F.pad(mode='reflect')`` on H and W; with ``valid`` the reflection is at the true border."""
    b, h, w, _ = x.shape
    if valid is None:
        return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    ih = _reflect_index(h + 2 * pad, pad, valid[:, 0], h)
    iw = _reflect_index(w + 2 * pad, pad, valid[:, 1], w)
    x = jnp.take_along_axis(x, ih[:, :, None, None], axis=1)
    return jnp.take_along_axis(x, iw[:, None, :, None], axis=2)


def filter2d(x: jax.Array, kernel: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Filters NHWC ``x`` with ``kernel`` ``(k, k)`` (shared) or ``(B, k, k)`` (per sample)."""
    b, h, w, c = x.shape
    k = kernel.shape[-1]
    if k % 2 != 1 or kernel.shape[-2] != k:
        raise ValueError(f"filter2d needs a square odd kernel, got {kernel.shape}")
    kernel = jnp.broadcast_to(kernel.astype(jnp.float32), (b, k, k))
    xp = reflect_pad(x.astype(jnp.float32), k // 2, valid)
    # Fold batch into channels: one depthwise conv with a kernel per (sample, channel).
    lhs = jnp.transpose(xp, (1, 2, 0, 3)).reshape(1, h + k - 1, w + k - 1, b * c)
    rhs = jnp.repeat(kernel, c, axis=0)  # (b*c, k, k), sample-major like lhs
    rhs = jnp.transpose(rhs, (1, 2, 0))[:, :, None, :]  # HWIO with I = 1
    out = jax.lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=b * c,
        precision=_HP,
    )
    return jnp.transpose(out.reshape(h, w, b, c), (2, 0, 1, 3))


def _fft_len(n: int) -> int:
    """The smallest 5-smooth length >= ``n`` (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for f in (2, 3, 5):
            while r % f == 0:
                r //= f
        if r == 1:
            return m
        m += 1


def filter2d_fft(x: jax.Array, kernel: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """``filter2d`` computed with FFTs: the same reflect padding, then a circular correlation.

    On the padded ``(h + k - 1, w + k - 1)`` image every output pixel ``i < h`` reads ``i .. i +
    k - 1``, so the circular correlation (``irfft(rfft(x) * conj(rfft(kernel)))``, zero-padded to
    a fast length) equals the valid cross-correlation; float32 rounding differs from the direct
    sum by ~1e-7 on [0, 1] images. Per-sample 21x21 kernels cost O(log n) per pixel instead of 441
    multiply-adds (XLA's grouped convolution on CPU is slow).
    """
    b, h, w, c = x.shape
    k = kernel.shape[-1]
    if k % 2 != 1 or kernel.shape[-2] != k:
        raise ValueError(f"filter2d needs a square odd kernel, got {kernel.shape}")
    kernel = jnp.broadcast_to(kernel.astype(jnp.float32), (b, k, k))
    xp = reflect_pad(x.astype(jnp.float32), k // 2, valid)
    n = (_fft_len(h + k - 1), _fft_len(w + k - 1))
    spec = jnp.fft.rfft2(jnp.transpose(xp, (0, 3, 1, 2)), s=n)
    kspec = jnp.conj(jnp.fft.rfft2(kernel, s=n))[:, None]
    out = jnp.fft.irfft2(spec * kspec, s=n)[:, :, :h, :w]
    return jnp.transpose(out, (0, 2, 3, 1))


def valid_mask(shape: tuple[int, ...], valid: jax.Array) -> jax.Array:
    """``(B, H, W, 1)`` float mask of the true pixels of a bucket-padded batch."""
    _, h, w = shape[:3]
    rows = jnp.arange(h)[None, :] < valid[:, :1]
    cols = jnp.arange(w)[None, :] < valid[:, 1:2]
    return (rows[:, :, None] & cols[:, None, :])[..., None].astype(jnp.float32)


def rgb_to_gray(x: jax.Array) -> jax.Array:
    """torchvision ``rgb_to_grayscale`` (one channel kept)."""
    r, g, b = GRAY_WEIGHTS
    return (r * x[..., 0:1] + g * x[..., 1:2] + b * x[..., 2:3]).astype(x.dtype)


def gaussian_noise(
    key: jax.Array,
    x: jax.Array,
    sigma: jax.Array,
    gray: jax.Array,
    shared_gray_field: bool = True,
) -> jax.Array:
    """Noise of BasicSR ``generate_gaussian_noise_pt``: ``randn * sigma / 255`` per sample.

    ``sigma`` (B,) is in 0..255 units, ``gray`` (B,) 0/1 picks one channel broadcast to RGB.
    BasicSR draws its gray field as ``randn(h, w)``, one field for the whole batch scaled per
    sample; ``shared_gray_field=True`` keeps that, ``False`` draws one field per sample.
    Normals come from ``rng.normal`` (fused Threefry bits: ``jax.random``'s are slow on CPU).
    """
    b, h, w, c = x.shape
    k_col, k_gray = jax.random.split(key)
    s = sigma.astype(jnp.float32).reshape(b, 1, 1, 1) / 255.0
    gray_shape = (1, h, w, 1) if shared_gray_field else (b, h, w, 1)
    # Each field only when a sample uses it (BasicSR's ``cal_gray_noise``); the ``cond`` also
    # keeps each draw in its own loop: fused with the mix below, XLA's CPU loop is ~10x slower.
    g = gray.astype(jnp.float32).reshape(b)
    color = jax.lax.cond(
        jnp.any(g < 1), lambda: _rng.normal(k_col, x.shape), lambda: jnp.zeros(x.shape, jnp.float32)
    )
    gray_noise = jax.lax.cond(
        jnp.any(g > 0),
        lambda: _rng.normal(k_gray, gray_shape),
        lambda: jnp.zeros(gray_shape, jnp.float32),
    )
    color, gray_noise = color * s, gray_noise * s
    g = g.reshape(b, 1, 1, 1)
    return color * (1 - g) + gray_noise * g


def _unique_levels(img255: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-sample number of distinct values among masked pixels of an image rounded to 0..255."""
    b = img255.shape[0]
    ids = img255.astype(jnp.int32).reshape(b, -1) + 256 * jnp.arange(b)[:, None]
    weights = jnp.broadcast_to(mask, img255.shape).astype(jnp.int32).reshape(b, -1)
    counts = jax.ops.segment_sum(weights.ravel(), ids.ravel(), num_segments=b * 256)
    return jnp.sum(counts.reshape(b, 256) > 0, axis=1)


def _levels_exponent(img255: jax.Array, mask: jax.Array) -> jax.Array:
    """``e = ceil(log2(#distinct values))`` per sample (BasicSR's ``vals = 2 ** e``), int32."""
    levels = jnp.maximum(_unique_levels(img255, mask), 1).astype(jnp.int32)
    return 32 - jax.lax.clz(levels - 1)  # ceil(log2(n)) for n >= 1, exact in integers


def poisson_noise(
    key: jax.Array,
    x: jax.Array,
    scale: jax.Array,
    gray: jax.Array,
    valid: jax.Array | None = None,
) -> jax.Array:
    """Noise of BasicSR ``generate_poisson_noise_pt``.

    The image is rounded to 8 bits, ``vals = 2 ** ceil(log2(#distinct values))`` per sample
    (counted over the true pixels only), ``poisson(img * vals) / vals - img``, times ``scale``;
    the gray variant (``gray`` 1) does the same on ``rgb_to_grayscale`` and broadcasts it to RGB.
    Each sample draws only the field it uses: three colour channels, or one grey channel (the
    first of three, the other two are discarded), all in one ``poisson.sample_counts`` call.
    """
    b = x.shape[0]
    mask = (
        jnp.ones((b, *x.shape[1:3], 1), jnp.float32)
        if valid is None
        else valid_mask(x.shape, valid)
    )
    col = jnp.clip(jnp.round(x * 255.0), 0, 255)
    gry = jnp.clip(jnp.round(rgb_to_gray(x) * 255.0), 0, 255)
    is_gray = gray.reshape(b) > 0.5
    exponent = jnp.where(is_gray, _levels_exponent(gry, mask), _levels_exponent(col, mask))
    level = jnp.where(is_gray[:, None, None, None], jnp.broadcast_to(gry, x.shape), col)
    counts = _poisson.sample_counts(key, level.astype(jnp.int32), exponent)
    vals = jnp.exp2(exponent.astype(jnp.float32)).reshape(b, 1, 1, 1)
    noise = counts / vals - level / 255.0
    noise = jnp.where(is_gray[:, None, None, None], noise[..., :1], noise)
    return noise * scale.astype(jnp.float32).reshape(b, 1, 1, 1)


def usm_sharp(
    x: jax.Array, kernel: jax.Array, weight: float = 0.5, threshold: float = 10
) -> jax.Array:
    """Real-ESRGAN ``USMSharp.forward``: sharpen where the high-pass exceeds ``threshold``/255."""
    blur = filter2d(x, kernel)
    residual = x - blur
    mask = (jnp.abs(residual) * 255 > threshold).astype(jnp.float32)
    soft = filter2d(mask, kernel)
    sharp = jnp.clip(x + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * x


def quantize_8bit(x: jax.Array) -> jax.Array:
    """``clamp(round(x * 255), 0, 255) / 255`` (round half to even, like ``torch.round``)."""
    return jnp.clip(jnp.round(x * 255.0), 0, 255) / 255.0
