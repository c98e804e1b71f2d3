"""filter2d against torch conv2d with reflect padding; noise statistics; USM; 8-bit rounding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adcsr_jax.data import ops

RNG = np.random.default_rng(0)


def _torch_filter2d(x_nchw: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """BasicSR filter2D, written out with torch ops."""
    b, c, h, w = x_nchw.shape
    k = kernel.shape[-1]
    img = F.pad(torch.from_numpy(np.ascontiguousarray(x_nchw)), (k // 2,) * 4, mode="reflect")
    kern = torch.from_numpy(kernel).view(b, 1, k, k).repeat(1, c, 1, 1).view(b * c, 1, k, k)
    out = F.conv2d(img.view(1, b * c, *img.shape[-2:]), kern, groups=b * c)
    return out.view(b, c, h, w).numpy()


@pytest.mark.parametrize("k", [3, 11, 21])
def test_filter2d_matches_torch_per_sample_kernels(k):
    x = RNG.random((3, 3, 30, 41)).astype(np.float32)
    kern = RNG.random((3, k, k)).astype(np.float32)
    kern /= kern.sum(axis=(1, 2), keepdims=True)
    ref = _torch_filter2d(x, kern)
    out = np.asarray(ops.filter2d(x.transpose(0, 2, 3, 1), kern)).transpose(0, 3, 1, 2)
    assert np.abs(out - ref).max() <= 1e-5


def test_filter2d_shared_kernel_and_bucket_valid_region():
    x = RNG.random((2, 25, 33, 3)).astype(np.float32)
    kern = RNG.random((21, 21)).astype(np.float32)
    kern /= kern.sum()
    ref = np.asarray(ops.filter2d(x, kern))
    ref_t = _torch_filter2d(x.transpose(0, 3, 1, 2), np.stack([kern] * 2)).transpose(0, 2, 3, 1)
    assert np.abs(ref - ref_t).max() <= 1e-5
    # Same image inside a 48x48 bucket with junk padding: reflection must happen at the true border.
    padded = np.full((2, 48, 48, 3), 5.0, np.float32)
    padded[:, :25, :33] = x
    out = np.asarray(ops.filter2d(padded, kern, jnp.asarray([[25, 33], [25, 33]])))
    np.testing.assert_allclose(out[:, :25, :33], ref, atol=1e-5)


def test_filter2d_pulse_is_identity():
    x = RNG.random((2, 16, 16, 3)).astype(np.float32)
    from adcsr_jax.data.kernels import pulse_kernel

    np.testing.assert_array_equal(np.asarray(ops.filter2d(x, pulse_kernel())), x)


def test_gaussian_noise_statistics():
    x = jnp.full((4, 128, 128, 3), 0.5)
    sigma = jnp.asarray([1.0, 10.0, 30.0, 15.0])
    gray = jnp.asarray([0.0, 0.0, 1.0, 1.0])
    n = np.asarray(ops.gaussian_noise(jax.random.key(0), x, sigma, gray, shared_gray_field=True))
    for i in range(4):
        assert n[i].std() == pytest.approx(float(sigma[i]) / 255, rel=0.03)
        assert abs(n[i].mean()) < 3 * float(sigma[i]) / 255 / 128
    assert not np.allclose(n[0, ..., 0], n[0, ..., 1])  # colour noise: channels differ
    np.testing.assert_array_equal(n[2, ..., 0], n[2, ..., 2])  # grey: one field
    # BasicSR draws one grey field per batch, scaled per sample
    np.testing.assert_allclose(n[2] / 30.0, n[3] / 15.0, rtol=1e-5, atol=1e-9)
    m = np.asarray(ops.gaussian_noise(jax.random.key(0), x, sigma, gray, shared_gray_field=False))
    assert not np.allclose(m[2] / 30.0, m[3] / 15.0)


def test_poisson_noise_statistics():
    levels = np.arange(256, dtype=np.float32) / 255  # 256 distinct values -> vals = 256
    img = np.tile(levels, (1, 64 * 64 * 3 // 256 * 4))[:, : 128 * 128 * 3].reshape(1, 128, 128, 3)
    img = np.concatenate([img, np.full_like(img, 0.5)])  # 1 distinct value -> vals = 1
    scale = jnp.asarray([1.0, 2.0])
    n = np.asarray(ops.poisson_noise(jax.random.key(1), jnp.asarray(img), scale, jnp.zeros(2)))
    # Var(poisson(v*x)/v) = x/v; mean 0.
    var0 = float(np.mean(img[0])) / 256
    assert n[0].var() == pytest.approx(var0, rel=0.05)
    assert abs(n[0].mean()) < 4 * np.sqrt(var0 / n[0].size)
    assert n[1].var() == pytest.approx(4 * 0.5, rel=0.05)  # scale^2 * x / 1
    # grey noise is one field broadcast to RGB
    g = np.asarray(ops.poisson_noise(jax.random.key(1), jnp.asarray(img), scale, jnp.ones(2)))
    np.testing.assert_array_equal(g[..., 0], g[..., 2])


def test_poisson_levels_count_only_valid_pixels():
    img = np.zeros((1, 32, 32, 3), np.float32)
    img[:, :16, :16] = 0.5  # true region: one level
    img[:, 16:, :] = RNG.random((16, 32, 3))  # padding: many levels
    img255 = jnp.round(jnp.asarray(img) * 255)
    mask = ops.valid_mask(img.shape, jnp.asarray([[16, 16]]))
    assert int(ops._unique_levels(img255, mask)[0]) == 1
    assert int(ops._unique_levels(img255, jnp.ones_like(mask))[0]) > 100


def test_usm_and_quantize():
    x = jnp.asarray(RNG.random((1, 60, 60, 3)).astype(np.float32))
    from adcsr_jax.data.kernels import usm_kernel

    y = np.asarray(ops.usm_sharp(x, usm_kernel()))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not np.allclose(y, x)
    q = np.asarray(ops.quantize_8bit(jnp.asarray([-0.1, 0.5 / 255, 1.5 / 255, 0.3, 1.2])))
    np.testing.assert_allclose(q * 255, [0, 0, 2, 76, 255])
