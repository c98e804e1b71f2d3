"""The fused Threefry bits equal JAX's ``threefry_2x32`` bit for bit; the normals are standard."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32
from scipy import stats

from adcsr_jax.data import rng as R


@pytest.mark.parametrize("shape", [(10,), (11,), (3, 5, 7), (1,)])
def test_bits_equal_jax_threefry(shape):
    key = jax.random.key(5)
    ours = np.asarray(R.bits(key, shape))
    k0, k1 = R.key_words(key)
    n = int(np.prod(shape))
    ref = np.asarray(threefry_2x32(jnp.stack([k0, k1]), jnp.arange(n, dtype=jnp.uint32)))
    np.testing.assert_array_equal(ours.ravel(), ref)
    assert ours.shape == shape and ours.dtype == np.uint32


def test_bits_differ_between_keys_and_look_uniform():
    a = np.asarray(R.bits(jax.random.key(0), (200_000,)))
    b = np.asarray(R.bits(jax.random.key(1), (200_000,)))
    assert (a != b).mean() > 0.99
    top = np.bincount(a >> 24, minlength=256)  # top byte: chi-square against uniform
    assert stats.chisquare(top).pvalue > 1e-4
    bits = np.unpackbits(a.view(np.uint8)).reshape(-1, 32).mean(axis=0)
    np.testing.assert_allclose(bits, 0.5, atol=0.005)


def test_normal_is_standard():
    z = np.asarray(R.normal(jax.random.key(2), (400_000,)))
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert z.std() == pytest.approx(1.0, abs=5 * np.sqrt(0.5 / z.size))
    assert stats.kstest(z, "norm").pvalue > 1e-4
    ref = np.random.default_rng(0).standard_normal(z.size)
    assert stats.ks_2samp(z, ref).pvalue > 1e-4
