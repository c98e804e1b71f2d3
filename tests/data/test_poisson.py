"""The alias-table Poisson sampler: its tables reproduce the pmf, its draws match numpy's Poisson
at the rates BasicSR's noise produces, and ``poisson_noise`` keeps its per-sample structure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from adcsr_jax.data import ops
from adcsr_jax.data import poisson as P


def test_rates_are_basicsr_float32_products():
    r = P.rates()
    assert r.shape == (9, 256) and r.dtype == np.float32
    img = np.clip(np.round(np.linspace(0, 1, 256, dtype=np.float32) * 255), 0, 255) / 255
    for e in (0, 3, 8):
        np.testing.assert_array_equal(r[e], img.astype(np.float32) * np.float32(2**e))


def test_alias_tables_reproduce_the_pmf():
    table = P.packed_table()
    thr = (table >> P.SLOT_BITS).astype(np.float64).reshape(-1, P.SLOTS) / 2**P.THR_BITS
    alias = (table & (P.SLOTS - 1)).astype(np.int64).reshape(-1, P.SLOTS)
    implied = thr / P.SLOTS
    for d in range(implied.shape[0]):
        np.add.at(implied[d], alias[d], (1 - thr[d]) / P.SLOTS)
    lam = P.rates().astype(np.float64).reshape(-1)
    pmf = stats.poisson.pmf(np.arange(P.SLOTS)[None, :], lam[:, None])
    tv = 0.5 * np.abs(implied - pmf).sum(axis=1)
    assert tv.max() < 512 * 2.0**-32  # threshold rounding only
    np.testing.assert_allclose(implied.sum(axis=1), 1.0, atol=1e-12)


def test_alias_tables_small_cases():
    pmf = np.array([[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]])
    prob, alias = P.alias_tables(pmf)
    k = pmf.shape[1]
    implied = prob / k
    for d in range(3):
        np.add.at(implied[d], alias[d], (1 - prob[d]) / k)
    np.testing.assert_allclose(implied, pmf, atol=1e-15)


def _merge_bins(a: np.ndarray, b: np.ndarray, min_count: int = 20):
    """Adjacent histogram bins merged until each has ``min_count`` draws in total."""
    out_a, out_b, ca, cb = [], [], 0, 0
    for x, y in zip(a, b):
        ca, cb = ca + x, cb + y
        if ca + cb >= min_count:
            out_a.append(ca)
            out_b.append(cb)
            ca = cb = 0
    if out_a:
        out_a[-1] += ca
        out_b[-1] += cb
    return np.asarray(out_a), np.asarray(out_b)


def test_draws_match_numpy_at_the_rates_that_occur():
    levels = np.asarray([0, 1, 9, 37, 128, 200, 255])
    n = 30_000
    level = np.broadcast_to(np.repeat(levels, n)[None], (9, levels.size * n))
    counts = np.asarray(
        P.sample_counts(jax.random.key(3), jnp.asarray(level), jnp.arange(9, dtype=jnp.int32))
    ).reshape(9, levels.size, n)
    rng = np.random.default_rng(0)
    lam = P.rates()
    for e in range(9):
        for i, m in enumerate(levels):
            ours = counts[e, i]
            rate = float(lam[e, m])
            ref = rng.poisson(rate, n)
            assert np.all(ours == np.round(ours)) and ours.min() >= 0
            if rate == 0:
                assert ours.max() == 0
                continue
            se = np.sqrt(rate / n)
            assert abs(ours.mean() - rate) < 5 * se, (e, m)
            var_se = np.sqrt((rate + 2 * rate**2) / n)  # Poisson: mu4 - sigma^4 = lam + 2 lam^2
            assert abs(ours.var() - rate) < 5 * var_se, (e, m)
            top = int(max(ours.max(), ref.max())) + 1
            a, b = _merge_bins(
                np.bincount(ours.astype(int), minlength=top), np.bincount(ref, minlength=top)
            )
            if a.size > 1:
                p = stats.chi2_contingency(np.stack([a, b]))[1]
                assert p > 1e-4, (e, m, p)


def test_poisson_noise_draws_one_field_per_sample():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((2, 64, 64, 3)).astype(np.float32))
    n = np.asarray(ops.poisson_noise(jax.random.key(0), x, jnp.ones(2), jnp.asarray([0.0, 1.0])))
    assert not np.allclose(n[0, ..., 0], n[0, ..., 1])  # colour: independent channels
    np.testing.assert_array_equal(n[1, ..., 0], n[1, ..., 1])  # grey: one field
    # counts / vals - img: on a 256-level image vals = 256, so noise * 256 is an integer shift
    rounded = np.clip(np.round(np.asarray(x[0]) * 255), 0, 255) / 255
    k = (n[0] + rounded) * 256
    np.testing.assert_allclose(k, np.round(k), atol=2e-3)
