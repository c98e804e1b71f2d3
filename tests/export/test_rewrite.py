"""The W8A16-friendly rewrite: same float results, no int16-hostile primitive left, and it is
what makes TFLite W8A16 of a GroupNorm network accurate."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.export.rewrite import (
    erf_friendly,
    primitive_counts,
    quant_friendly,
    rsqrt_refined,
    sum_matmul,
)
from adcsr_jax.nn.attention import multi_head_attention
from adcsr_jax.nn.norm import GroupNorm, LayerNorm

HOSTILE = (
    "reduce_sum",
    "div",
    "erf",
    "erfc",
    "neg",
    "square",
    "integer_pow",
    "sqrt",
    "min",
    "clamp",
)


def _hostile(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k in HOSTILE}


def _apply(module: nn.Module, x: jax.Array):
    params = module.init(jax.random.key(0), x)
    return lambda x: module.apply(params, x)


@pytest.mark.parametrize(
    "make",
    [
        lambda: _apply(GroupNorm(num_groups=4, epsilon=1e-6), jnp.zeros((2, 8, 8, 16))),
        lambda: _apply(LayerNorm(epsilon=1e-5), jnp.zeros((2, 8, 8, 16))),
        lambda: lambda x: jax.nn.gelu(x, approximate=False),
        lambda: lambda x: jax.nn.softmax(x * 3.0, axis=-1),
        lambda: (
            lambda x: multi_head_attention(
                x.reshape(2, 64, 16), x.reshape(2, 64, 16), x.reshape(2, 64, 16), 4
            )
        ),
        lambda: (
            lambda x: (x - x.mean((1, 2), keepdims=True)) / x.std((1, 2), ddof=1, keepdims=True)
        ),
        lambda: lambda x: jnp.clip(x / 2 + 0.5, 0.0, 1.0),
    ],
    ids=["groupnorm", "layernorm", "gelu_erf", "softmax", "attention", "colour_stats", "clamp"],
)
def test_rewrite_equals_original_in_float(make, request) -> None:
    fn = make()
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16)) * 2.0 + 0.5
    ref = np.asarray(jax.jit(fn)(x))
    got = np.asarray(jax.jit(quant_friendly(fn))(x))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-6 * max(1.0, np.abs(ref).max()), rtol=0)
    counts = primitive_counts(quant_friendly(fn), x)
    # A softmax keeps exactly its sum and division (TFLite fuses them into SOFTMAX).
    softmax = request.node.callspec.id in ("softmax", "attention")
    assert _hostile(counts) == ({"reduce_sum": 1, "div": 1} if softmax else {})
    assert not any(_infinite_max(e) for e in _eqns(quant_friendly(fn), x))


def test_softmax_over_one_token_is_one_and_leaves_no_division() -> None:
    """Attention over a 1 x 1 latent (the tiny student at LR 16): a one-element softmax, which
    TFLite cannot fuse into SOFTMAX, so its DIV broke the W8A16 conversion."""

    def fn(x):
        q = x.reshape(2, 1, 16)
        return multi_head_attention(q, q * 0.5, q + 1.0, 4)

    x = jax.random.normal(jax.random.key(2), (2, 1, 1, 16))
    np.testing.assert_allclose(
        np.asarray(jax.jit(quant_friendly(fn))(x)), np.asarray(jax.jit(fn)(x)), rtol=0, atol=1e-6
    )
    assert "div" not in primitive_counts(quant_friendly(fn), x)


def _eqns(fn, *args):
    return jax.make_jaxpr(fn)(*args).jaxpr.eqns


def _infinite_max(eqn) -> bool:
    """``max(x, -inf)``: softmax's initial value, which int16 MAXIMUM gets wrong."""
    return eqn.primitive.name == "max" and any(
        isinstance(v, jax.extend.core.Literal) and np.all(np.isneginf(v.val)) for v in eqn.invars
    )


def test_rsqrt_refined_equals_rsqrt_and_corrects_a_table_error() -> None:
    v = jnp.logspace(-6, 3, 1001, dtype=jnp.float32)
    np.testing.assert_allclose(rsqrt_refined(v), jax.lax.rsqrt(v), rtol=2e-6)
    # Two Newton steps from a start 17% off (int16 RSQRT at 1/4000 of its range) -> < 0.5%.
    r = jax.lax.rsqrt(v) * 1.17
    for _ in range(2):
        r = r * (1.5 - 0.5 * ((v * r) * r))
    assert float(jnp.max(jnp.abs(r * jnp.sqrt(v) - 1.0))) < 5e-3


def test_statistics_get_newton_steps_and_elementwise_rsqrt_does_not() -> None:
    gn = _apply(GroupNorm(num_groups=4, epsilon=1e-6), jnp.zeros((1, 4, 4, 8)))
    x = jnp.ones((1, 4, 4, 8))
    plain = primitive_counts(gn, x)
    rewritten = primitive_counts(quant_friendly(gn), x)
    assert rewritten["rsqrt"] == plain["rsqrt"] == 1
    assert rewritten["mul"] >= plain["mul"] + 6  # 2 steps x 3 products
    assert primitive_counts(quant_friendly(jax.lax.rsqrt), x) == {"rsqrt": 1}


def test_erf_friendly_matches_erf() -> None:
    x = jnp.linspace(-9.0, 9.0, 20001)
    np.testing.assert_allclose(erf_friendly(x), jax.scipy.special.erf(x), atol=1e-6, rtol=0)


def test_sum_matmul_two_stage_and_symbolic_free() -> None:
    x = jax.random.normal(jax.random.key(2), (2, 64, 96, 4, 3))
    for axes in [(1, 2, 4), (4,), (1,), (0, 3)]:
        np.testing.assert_allclose(sum_matmul(x, axes), x.sum(axes), rtol=1e-5, atol=1e-3)


def test_division_by_unknown_sign_is_kept() -> None:
    fn = lambda x: x / (x - 0.5)  # noqa: E731  (sign unknown: must not become rsqrt**2)
    x = jnp.array([0.0, 0.25, 1.0, 2.0])
    np.testing.assert_allclose(quant_friendly(fn)(x), fn(x), rtol=1e-6)
    assert primitive_counts(quant_friendly(fn), x).get("div") == 1


class _GNNet(nn.Module):
    """conv -> 3 x (GroupNorm -> SiLU -> conv) -> conv: the ResNet pattern of the student."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(32, (3, 3), padding=1)(x)
        for _ in range(3):
            h = nn.Conv(32, (3, 3), padding=1)(nn.silu(GroupNorm(num_groups=8, epsilon=1e-6)(h)))
        return nn.Conv(3, (3, 3), padding=1)(h)


def test_w8a16_groupnorm_needs_the_rewrite() -> None:
    """Measured: int16 SUM ruins GroupNorm (about 20 dB); the matmul form gives about 50 dB."""
    pytest.importorskip("tensorflow")
    from adcsr_jax.export import tflite
    from adcsr_jax.export.verify import compare

    net = _GNNet()
    x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), minval=-1, maxval=1)
    params = net.init(jax.random.key(1), x)["params"]
    apply = lambda p, x: net.apply({"params": p}, x)  # noqa: E731
    rng = np.random.default_rng(0)
    reps = [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(8)]
    ref = np.asarray(apply(params, x))
    psnr = {}
    for rewrite in (False, True):
        data = tflite.convert(apply, params, (1, 32, 32, 3), "w8a16", reps, rewrite=rewrite)
        runner = tflite.TFLiteRunner(data)
        assert ("SUM" in runner.op_names()) is (not rewrite)
        psnr[rewrite] = compare(ref, runner(np.asarray(x))).psnr
    assert psnr[False] < 30.0, psnr
    assert psnr[True] > 45.0, psnr
