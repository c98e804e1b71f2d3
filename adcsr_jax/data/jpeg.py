"""BasicSR ``DiffJPEG(differentiable=False)`` in JAX: batched JPEG with a float quality per sample.

Semantics kept from ``basicsr/utils/diffjpeg.py``:

* RGB in [0, 1] is scaled to 0..255 and converted to YCbCr with the JFIF matrix (+128 on chroma).
* 4:2:0 chroma subsampling by 2x2 average pooling; H and W are zero-padded to multiples of 16 first
  and the result is cropped back.
* 8x8 DCT of ``value - 128`` (orthonormal JPEG DCT), quantised with ``round(c / (T * f)) * (T * f)``
  (round half to even, like ``torch.round``) where ``f = (5000 / q if q < 50 else 200 - 2 q) / 100``
  for a **float** quality ``q``. The tables are BasicSR's: the luminance table is the standard JPEG
  table transposed (``y_table = [...].T``) and the chroma table is 99 with its top-left 4x4 given
  (also transposed); the transposition is kept for parity.
* Inverse DCT, chroma upsampled by nearest x2, YCbCr -> RGB, clamped to [0, 255], divided by 255.

At ``q = 100`` the factor is 0 and the PyTorch code divides by zero (NaN). ``uniform_(60, 100)``
never draws exactly 100, so the reference never hits it; here ``f = 0`` means "no quantisation",
the limit as ``q -> 100`` (only the colour conversion and chroma subsampling remain).

``diff_jpeg`` works on any size; ``diff_jpeg_padded`` is the same on an array whose H and W are
already multiples of 16 and zero beyond each sample's true size (the degradation's size buckets):
the blocks that hold true pixels then see exactly the zero padding the reference adds.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

_HP = jax.lax.Precision.HIGHEST

_Y_STD = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.float32,
)
Y_TABLE = _Y_STD.T.copy()
C_TABLE = np.full((8, 8), 99, np.float32)
C_TABLE[:4, :4] = np.array(
    [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]], np.float32
).T

_RGB2YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32
).T
_YCC2RGB = np.array([[1.0, 0.0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]], np.float32).T


def _dct_tensors() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    fwd = np.zeros((8, 8, 8, 8), np.float32)
    inv = np.zeros((8, 8, 8, 8), np.float32)
    for x, y, u, v in itertools.product(range(8), repeat=4):
        fwd[x, y, u, v] = np.cos((2 * x + 1) * u * np.pi / 16) * np.cos(
            (2 * y + 1) * v * np.pi / 16
        )
        inv[x, y, u, v] = np.cos((2 * u + 1) * x * np.pi / 16) * np.cos(
            (2 * v + 1) * y * np.pi / 16
        )
    alpha = np.array([1.0 / np.sqrt(2)] + [1] * 7)
    scale = (np.outer(alpha, alpha) * 0.25).astype(np.float32)
    return fwd, scale, inv, np.outer(alpha, alpha).astype(np.float32)


_DCT, _DCT_SCALE, _IDCT, _IDCT_ALPHA = _dct_tensors()


def quality_to_factor(quality: jax.Array) -> jax.Array:
    """DiffJPEG's table multiplier for a (float) quality."""
    q = jnp.asarray(quality, jnp.float32)
    return jnp.where(q < 50, 5000.0 / q, 200.0 - q * 2) / 100.0


def _blocks(x: jax.Array) -> jax.Array:
    b, h, w = x.shape
    return x.reshape(b, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)


def _unblocks(x: jax.Array) -> jax.Array:
    b, nh, nw, _, _ = x.shape
    return x.transpose(0, 1, 3, 2, 4).reshape(b, nh * 8, nw * 8)


def _quantise(coef: jax.Array, table: np.ndarray, factor: jax.Array) -> jax.Array:
    """``round(c / (T f)) * (T f)`` per sample; ``f == 0`` leaves the coefficients unchanged."""
    qt = jnp.asarray(table)[None] * factor.reshape(-1, 1, 1)  # (B, 8, 8)
    qt = qt[:, None, None]
    safe = jnp.where(qt > 0, qt, 1.0)
    return jnp.where(qt > 0, jnp.round(coef / safe) * safe, coef)


def _dct(x: jax.Array) -> jax.Array:
    """8x8 block DCT of a ``(B, H, W)`` plane in 0..255 -> ``(B, H/8, W/8, 8, 8)`` coefficients."""
    return jnp.asarray(_DCT_SCALE) * jnp.einsum(
        "bijxy,xyuv->bijuv", _blocks(x - 128.0), jnp.asarray(_DCT), precision=_HP
    )


def _idct(c: jax.Array) -> jax.Array:
    y = 0.25 * jnp.einsum(
        "bijxy,xyuv->bijuv", c * jnp.asarray(_IDCT_ALPHA), jnp.asarray(_IDCT), precision=_HP
    )
    return _unblocks(y + 128.0)


def _mix(planes: list[jax.Array], matrix: np.ndarray) -> list[jax.Array]:
    """``stack(planes, -1) @ matrix`` for a 3x3 colour matrix, written as multiply-adds.

    XLA:CPU runs the ``(pixels, 3) x (3, 3)`` dot and the fused 2x2 chroma mean 5-10x slower
    than these elementwise loops (``scripts/bench_data.py``); the sum is the same, in
    ``(p0 m0 + p1 m1) + p2 m2`` order (float32 rounding may differ from a dot kernel's by an ulp).
    """
    return [
        (planes[0] * matrix[0, d] + planes[1] * matrix[1, d]) + planes[2] * matrix[2, d]
        for d in range(3)
    ]


def _pool2(p: jax.Array) -> jax.Array:
    """2x2 average pooling of ``(B, H, W)`` (the 4:2:0 chroma subsampling), pairwise sums."""
    return ((p[:, 0::2, 0::2] + p[:, 0::2, 1::2]) + (p[:, 1::2, 0::2] + p[:, 1::2, 1::2])) / 4.0


def _up2(p: jax.Array) -> jax.Array:
    """Nearest x2 upsampling of ``(B, H, W)``."""
    b, h, w = p.shape
    return jnp.broadcast_to(p[:, :, None, :, None], (b, h, 2, w, 2)).reshape(b, 2 * h, 2 * w)


def _to_ycc_planes(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = x * 255.0
    y, cb, cr = _mix([x[..., 0], x[..., 1], x[..., 2]], _RGB2YCC)
    return y, _pool2(cb + 128.0), _pool2(cr + 128.0)


def quantised_coefficients(x: jax.Array, quality: jax.Array) -> tuple[jax.Array, ...]:
    """The quantised DCT levels (Y, Cb, Cr), i.e. ``round(c / (T f))``, for H, W multiples of 16.

    Exposed so the quantisation step can be checked against an independent implementation.
    """
    factor = quality_to_factor(quality)
    y, cb, cr = _to_ycc_planes(x.astype(jnp.float32))
    out = []
    for plane, table in ((y, Y_TABLE), (cb, C_TABLE), (cr, C_TABLE)):
        qt = (jnp.asarray(table)[None] * factor.reshape(-1, 1, 1))[:, None, None]
        out.append(jnp.round(_dct(plane) / qt))
    return tuple(out)


def diff_jpeg_padded(x: jax.Array, quality: jax.Array) -> jax.Array:
    """DiffJPEG on NHWC ``x`` in [0, 1] whose H and W are multiples of 16; ``quality`` is (B,)."""
    b, h, w, _ = x.shape
    if h % 16 or w % 16:
        raise ValueError(f"diff_jpeg_padded needs H, W multiples of 16, got {h}x{w}")
    factor = quality_to_factor(jnp.broadcast_to(jnp.asarray(quality, jnp.float32), (b,)))
    y, cb, cr = _to_ycc_planes(x.astype(jnp.float32))
    y = _idct(_quantise(_dct(y), Y_TABLE, factor))
    cb = _idct(_quantise(_dct(cb), C_TABLE, factor))
    cr = _idct(_quantise(_dct(cr), C_TABLE, factor))
    rgb = jnp.stack(_mix([y, _up2(cb) - 128.0, _up2(cr) - 128.0], _YCC2RGB), axis=-1)
    return jnp.clip(rgb, 0.0, 255.0) / 255.0


def diff_jpeg(x: jax.Array, quality: jax.Array | float) -> jax.Array:
    """DiffJPEG on NHWC ``x`` in [0, 1] of any size (zero-padded to 16, cropped back)."""
    b, h, w, _ = x.shape
    ph, pw = (-h) % 16, (-w) % 16
    xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, ph), (0, pw), (0, 0)))
    q = jnp.broadcast_to(jnp.asarray(quality, jnp.float32), (b,))
    return diff_jpeg_padded(xp, q)[:, :h, :w, :]
