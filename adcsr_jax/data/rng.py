"""Random bits for the degradation's noise fields: Threefry-2x32 counters, unrolled for fusion.

``jax.random`` draws bits on CPU through a Threefry lowering with a rolled loop (five passes over
memory) or, for ``rbg`` keys, XLA's ``RngBitGenerator``; either costs ~100 ns per 32-bit word on
this CPU, more than the noise arithmetic itself. Here the same hash, Threefry-2x32 with 20 rounds
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the algorithm behind JAX's
default PRNG), is written out round by round over a counter ``iota`` so XLA fuses it into one
loop: ``bits(key, shape)`` equals ``jax.extend.random.threefry_2x32(k, arange(n))`` reshaped
(``n`` the size of ``shape``),
where ``k`` is two words drawn from ``key`` (a test checks the equality bit for bit).

``normal`` turns the bits into standard normals exactly as ``jax.random.normal`` does (a uniform on
``[nextafter(-1, 0), 1)`` from the top 23 bits, then ``sqrt(2) * erfinv``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_ROT = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(v: jax.Array, r: int) -> jax.Array:
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array):
    """Threefry-2x32-20 of counter pairs ``(x0, x1)`` under key ``(k0, k1)`` (uint32 arrays)."""
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for i in range(5):
        for r in _ROT[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two uint32 words from any JAX key (typed or raw): the Threefry key of ``bits``."""
    w = jax.random.bits(key, (2,), jnp.uint32)
    return w[0], w[1]


def bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``shape`` uniformly random uint32 words."""
    n = int(np.prod(shape))
    half = (n + 1) // 2
    k0, k1 = key_words(key)
    c = jax.lax.iota(jnp.uint32, half)
    second = c + np.uint32(half)
    if n % 2:  # JAX pads an odd count with one 0
        second = jnp.where(c == half - 1, np.uint32(0), second)
    y0, y1 = threefry2x32(k0, k1, c, second)
    return jnp.concatenate([y0, y1])[:n].reshape(shape)


def normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal float32 samples (``jax.random.normal``'s transform of uniform bits)."""
    b = bits(key, shape)
    one = jax.lax.bitcast_convert_type((b >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = jnp.maximum(lo, (one - 1.0) * (1.0 - lo) + lo)
    return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(u)
