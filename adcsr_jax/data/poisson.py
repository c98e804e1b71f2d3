"""Poisson draws for BasicSR's ``generate_poisson_noise_pt`` rates, by table lookup (alias method).

BasicSR rounds the image to 8 bits and draws ``torch.poisson(img * vals)`` with
``img = m / 255`` (``m`` in 0..255) and ``vals = 2 ** ceil(log2(#distinct values))`` in
``{1, 2, ..., 256}``: only ``9 * 256`` distinct rates ``lam = float32(m / 255) * 2 ** e`` can occur
(the product by a power of two is exact in float32). ``jax.random.poisson`` runs rejection and
multiplication loops over the whole array until the slowest element finishes, which on a CPU costs
seconds per batch; here each rate's distribution is an alias table (Walker 1977, Vose 1991) built
once on the host in float64, and a draw is one 32-bit random word and one table lookup:

* the top 9 bits pick a slot ``j`` in ``0..511`` uniformly, the low 23 bits ``u`` a uniform
  threshold; the result is ``j`` if ``u < thr[j]`` else ``alias[j]`` (``thr`` has 23 bits, the
  alias 9: one ``uint32`` word per slot).

Exactness: every slot's acceptance probability is rounded to a multiple of ``2**-23``, so each
outcome's probability is the Poisson pmf to within ``512 * 2**-32`` (about ``1.2e-7`` in total
variation); the support is truncated at 511, where the pmf of the largest rate (256) is below
``1e-40``. Tests compare the draws with ``numpy``'s Poisson at the rates that occur.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from adcsr_jax.data import rng as _rng

SLOT_BITS = 9
SLOTS = 1 << SLOT_BITS  # support 0..511
THR_BITS = 32 - SLOT_BITS
LEVELS = 256  # 8-bit image levels m
EXPONENTS = 9  # vals = 2 ** e, e in 0..8


def rates() -> np.ndarray:
    """``(9, 256)`` float32 rates ``float32(m / 255) * 2 ** e`` exactly as BasicSR computes them."""
    img = np.arange(LEVELS, dtype=np.float32) / np.float32(255)
    vals = np.exp2(np.arange(EXPONENTS, dtype=np.float32))
    return vals[:, None] * img[None, :]


def alias_tables(pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias tables of many distributions at once: ``pmf`` ``(D, K)`` -> prob, alias.

    Lock-step over the ``D`` rows: each step pairs one "small" slot (scaled mass < 1) with one
    "large" slot of every row that still has both.
    """
    d, k = pmf.shape
    q = pmf / pmf.sum(axis=1, keepdims=True) * k
    prob = np.ones((d, k))
    alias = np.tile(np.arange(k), (d, 1))
    rows = np.arange(d)
    small = np.zeros((d, k), np.int64)
    large = np.zeros((d, k), np.int64)
    n_small = np.zeros(d, np.int64)
    n_large = np.zeros(d, np.int64)
    for j in range(k):  # push slot j on the small or the large stack of every row
        is_small = q[:, j] < 1.0
        small[rows[is_small], n_small[is_small]] = j
        n_small += is_small
        large[rows[~is_small], n_large[~is_small]] = j
        n_large += ~is_small
    while True:
        act = rows[(n_small > 0) & (n_large > 0)]
        if act.size == 0:
            break
        s = small[act, n_small[act] - 1]
        n_small[act] -= 1
        g = large[act, n_large[act] - 1]
        prob[act, s] = q[act, s]
        alias[act, s] = g
        q[act, g] = q[act, g] + q[act, s] - 1.0
        moved = q[act, g] < 1.0  # the large slot became small: move it over
        mv = act[moved]
        n_large[mv] -= 1
        small[mv, n_small[mv]] = g[moved]
        n_small[mv] += 1
    return prob, alias  # slots left on either stack keep prob 1 (float64 rounding residue)


@functools.cache
def packed_table() -> np.ndarray:
    """``(9 * 256 * 512,)`` uint32 words ``thr << 9 | alias`` for every rate (row ``e * 256 + m``)."""
    lam = rates().astype(np.float64).reshape(-1)
    k = np.arange(SLOTS, dtype=np.float64)[None, :]
    # exp(k log lam - lam - log k!), with 0 log 0 = 0 (lam = 0: all mass at 0)
    pmf = np.exp(special.xlogy(k, lam[:, None]) - lam[:, None] - special.gammaln(k + 1))
    prob, alias = alias_tables(pmf)
    thr = np.round(prob * (1 << THR_BITS)).astype(np.int64)
    full = thr >= (1 << THR_BITS)  # always accept: alias to itself, any threshold works
    alias = np.where(full, np.arange(SLOTS)[None, :], alias)
    thr = np.minimum(thr, (1 << THR_BITS) - 1)
    return ((thr << SLOT_BITS) | alias).astype(np.uint32).reshape(-1)


def sample_counts(key: jax.Array, level: jax.Array, exponent: jax.Array) -> jax.Array:
    """Poisson counts with rate ``float32(level / 255) * 2 ** exponent``, as float32.

    ``level`` is an int array of 8-bit levels (any shape ``(B, ...)``), ``exponent`` ``(B,)``
    ints in 0..8 (``log2(vals)`` per sample). ``key`` is any JAX key (``rng.bits`` draws the
    words).
    """
    b = level.shape[0]
    r = _rng.bits(key, level.shape)
    slot = (r >> THR_BITS).astype(jnp.int32)
    u = r & jnp.uint32((1 << THR_BITS) - 1)
    row = exponent.astype(jnp.int32).reshape((b,) + (1,) * (level.ndim - 1)) * LEVELS + level
    word = jnp.asarray(packed_table())[row.astype(jnp.int32) * SLOTS + slot]
    thr = word >> SLOT_BITS
    alias = (word & jnp.uint32(SLOTS - 1)).astype(jnp.int32)
    return jnp.where(u < thr, slot, alias).astype(jnp.float32)
