"""Flax building blocks against their torch / diffusers originals (fp32, <= 1e-4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.models import init_params
from adcsr_jax.nn import (
    GroupNorm,
    LayerNorm,
    ResnetBlock2D,
    Transformer2D,
    group_count,
    multi_head_attention,
    pixel_shuffle,
    pixel_unshuffle,
    timestep_embedding,
    upsample_nearest,
)

torch = pytest.importorskip("torch")


def test_group_count_rule():
    assert [group_count(w) for w in (240, 320, 480, 720, 960, 1440, 1920, 64, 48, 10, 7)] == [
        24, 32, 32, 24, 32, 32, 32, 32, 24, 2, 1,
    ]  # fmt: skip


@pytest.mark.parametrize(("width", "groups", "eps"), [(720, None, 1e-6), (64, 32, 1e-5)])
def test_group_norm_matches_torch(width, groups, eps):
    rng = np.random.default_rng(0)
    x = (3.0 + 5.0 * rng.standard_normal((2, 5, 6, width))).astype(np.float32)
    scale = rng.standard_normal(width).astype(np.float32)
    bias = rng.standard_normal(width).astype(np.float32)
    gn = torch.nn.GroupNorm(groups or group_count(width), width, eps)
    with torch.no_grad():
        gn.weight.copy_(torch.from_numpy(scale))
        gn.bias.copy_(torch.from_numpy(bias))
        want = gn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    got = GroupNorm(groups, eps).apply({"params": {"scale": scale, "bias": bias}}, x)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_group_norm_rejects_bad_groups():
    with pytest.raises(ValueError, match="not divisible into 32 groups"):
        GroupNorm(32).init(jax.random.key(0), jnp.zeros((1, 2, 2, 40)))


def test_layer_norm_matches_torch():
    x = np.random.default_rng(1).standard_normal((2, 7, 48)).astype(np.float32) * 4 + 1
    ln = torch.nn.LayerNorm(48)
    got = LayerNorm().apply({"params": {"scale": np.ones(48), "bias": np.zeros(48)}}, x)
    np.testing.assert_allclose(np.asarray(got), ln(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_pixel_unshuffle_channel_order_and_inverse():
    x = np.random.default_rng(2).standard_normal((2, 8, 6, 3)).astype(np.float32)
    want = torch.nn.PixelUnshuffle(2)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    got = pixel_unshuffle(jnp.asarray(x), 2)
    np.testing.assert_array_equal(np.asarray(got), want.numpy())
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(got, 2)), x)


@pytest.mark.parametrize("size", [None, (9, 7), (5, 13)])
def test_upsample_nearest_matches_torch(size):
    x = np.random.default_rng(3).standard_normal((1, 5, 4, 2)).astype(np.float32)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    kwargs = {"scale_factor": 2.0} if size is None else {"size": size}
    want = torch.nn.functional.interpolate(t, mode="nearest", **kwargs).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(upsample_nearest(jnp.asarray(x), size)), want.numpy())


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = np.array([0, 1, 250, 999], np.float32)
    want = get_timestep_embedding(torch.from_numpy(t), 320, True, 0).numpy()
    np.testing.assert_allclose(np.asarray(timestep_embedding(t, 320)), want, atol=1e-4, rtol=0)


def test_blocks_in_bfloat16_track_fp32():
    """bf16 compute: params stay fp32, norms/softmax in fp32, output close to the fp32 run."""
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 32))
    temb = jax.random.normal(jax.random.key(1), (1, 16))
    res = ResnetBlock2D(64, 8)
    params = jax.jit(lambda k: init_params(res, k, x, temb))(jax.random.key(2))
    full = jax.jit(res.apply)({"params": params}, x, temb)
    half = jax.jit(ResnetBlock2D(64, 8, dtype=jnp.bfloat16).apply)({"params": params}, x, temb)
    assert half.dtype == jnp.bfloat16
    assert float(jnp.abs(half.astype(jnp.float32) - full).max()) < 0.05 * float(jnp.abs(full).max())
    tr = Transformer2D(heads=2, cross_attention=True, norm_num_groups=8)
    ctx = jax.random.normal(jax.random.key(3), (1, 3, 12))
    tparams = jax.jit(lambda k: init_params(tr, k, full, ctx))(jax.random.key(4))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(tparams))
    full_t = jax.jit(tr.apply)({"params": tparams}, full, ctx)
    half_tr = Transformer2D(2, 1, True, 8, dtype=jnp.bfloat16)
    half_t = jax.jit(half_tr.apply)({"params": tparams}, half, ctx)
    assert half_t.dtype == jnp.bfloat16
    err = float(jnp.abs(half_t.astype(jnp.float32) - full_t).max())
    assert err < 0.05 * float(jnp.abs(full_t).max()), err


def test_chunked_attention_equals_dense_attention():
    rng = np.random.default_rng(5)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 64, 24), np.float32)) for _ in range(3))
    dense = multi_head_attention(q, k, v, heads=3)
    chunked = jax.jit(lambda a, b, c: multi_head_attention(a, b, c, heads=3, query_chunk=16))
    np.testing.assert_allclose(np.asarray(chunked(q, k, v)), np.asarray(dense), atol=1e-5, rtol=0)
    ctx = jnp.asarray(rng.standard_normal((2, 7, 24), np.float32))
    cross = multi_head_attention(q, ctx, ctx, heads=3, query_chunk=32)
    np.testing.assert_allclose(
        np.asarray(cross), np.asarray(multi_head_attention(q, ctx, ctx, heads=3)), atol=1e-5
    )


def test_chunked_attention_gradients_equal_dense_and_keep_no_probabilities():
    """The chunked path rematerialises each chunk: the same gradients, and the backward pass
    saves q, k, v instead of the (heads, T, T) probabilities (the training-memory option)."""
    rng = np.random.default_rng(6)
    q, k, v = (jnp.asarray(rng.standard_normal((1, 256, 16), np.float32)) for _ in range(3))
    w = jnp.asarray(rng.standard_normal((1, 256, 16), np.float32))

    def loss(chunk):
        return lambda a, b, c: jnp.sum(
            w * multi_head_attention(a, b, c, heads=2, query_chunk=chunk)
        )

    dense = jax.grad(loss(None), argnums=(0, 1, 2))(q, k, v)
    chunked = jax.jit(jax.grad(loss(64), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(chunked, dense, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
    _, residuals = jax.vjp(loss(64), q, k, v)
    saved = sum(x.size for x in jax.tree.leaves(residuals) if hasattr(x, "size"))
    assert saved < 2 * 256 * 256, saved  # one head's 256x256 probabilities alone are 65536
