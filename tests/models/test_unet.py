"""UNet2D against diffusers' UNet2DConditionModel (random weights, fp32, max abs error <= 1e-4)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.models import UNet2D, UNetConfig, UnsupportedConfigError, init_params, logical_axes
from adcsr_jax.testing import reference as ref
from adcsr_jax.weights import unet_params_from_torch

torch = pytest.importorskip("torch")

TINY = ref.TINY_UNET_CONFIG

# Student-like: widths whose group_count differs (40 -> 8, 80 -> 16, concat 120 -> 24), 3 levels.
STUDENT_LIKE = {
    "in_channels": 12,
    "out_channels": 20,
    "block_out_channels": [40, 80, 80],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 16,
    "attention_head_dim": [5, 10, 10],
    "use_linear_projection": True,
    "norm_num_groups": 8,
}


def _run(module, params, *args):
    return np.asarray(jax.jit(module.apply)({"params": params}, *args))


@pytest.mark.parametrize(("size", "chunk", "matmul"), [((8, 8), 16, 16), ((6, 10), None, None)])
def test_unet_with_cross_attention_matches_diffusers(size, chunk, matmul):
    # matmul=16: every conv on a map of <= 16 pixels (the 4x4 and 2x2 levels) is an im2col matmul.
    model = ref.torch_unet(TINY, seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 4), np.float32)
    t = np.array([3.0, 801.0], np.float32)
    ctx = rng.standard_normal((2, 7, 24), np.float32)
    with torch.no_grad():
        want = ref.nhwc(model(ref.nchw(x), torch.from_numpy(t), torch.from_numpy(ctx)).sample)
    config = dataclasses.replace(
        UNetConfig.from_diffusers(TINY), attention_query_chunk=chunk, conv_matmul_max_pixels=matmul
    )
    params = unet_params_from_torch(ref.state_dict_numpy(model), config)
    got = _run(UNet2D(config), params, x, t, ctx)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_unet_odd_latent_uses_skip_sizes():
    model = ref.torch_unet(STUDENT_LIKE, seed=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 9, 7, 12), np.float32)
    ctx = rng.standard_normal((1, 3, 16), np.float32)
    with torch.no_grad():
        want = ref.nhwc(model(ref.nchw(x), 5, torch.from_numpy(ctx)).sample)
    config = UNetConfig.from_diffusers(STUDENT_LIKE)
    params = unet_params_from_torch(ref.state_dict_numpy(model), config)
    np.testing.assert_allclose(_run(UNet2D(config), params, x, 5.0, ctx), want, atol=1e-4, rtol=0)


def test_pruned_style_unet_without_time_or_cross_attention():
    """No time embedding, no attn2/norm2, group_count per layer: the AdcSR student's UNet shape."""
    model = ref.strip_unet_conditioning(
        ref.torch_unet(STUDENT_LIKE, seed=3), cross=False, time=False, group_rule=True
    )
    x = np.random.default_rng(2).standard_normal((2, 8, 8, 12), np.float32)
    with torch.no_grad():
        want = ref.nhwc(model(ref.nchw(x), 0, None).sample)
    config = dataclasses.replace(
        UNetConfig.from_diffusers(STUDENT_LIKE),
        cross_attention_dim=None,
        time_embedding=False,
        norm_num_groups=None,
    )
    state = ref.state_dict_numpy(model, drop=("time_embedding", "time_emb_proj"))
    params = unet_params_from_torch(state, config)
    assert "time_embedding" not in params
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = {jax.tree_util.keystr(p) for p, _ in flat}
    assert not any("attn2" in n or "norm2']" in n and "transformer" in n for n in names)
    assert not any("time_emb_proj" in n for n in names)
    got = _run(UNet2D(config), params, x)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_bf16_config_gives_bf16_output_and_fp32_params():
    config = dataclasses.replace(UNetConfig.from_diffusers(TINY), dtype=jnp.bfloat16)
    args = (jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 2, 24)))
    out = jax.eval_shape(lambda: UNet2D(config).init_with_output(jax.random.key(0), *args))
    assert out[0].dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(out[1]))


def test_logical_axes_and_plain_params():
    config = UNetConfig.from_diffusers(TINY)
    args = (jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 2, 24)))
    specs = logical_axes(UNet2D(config), *args)
    assert tuple(specs["conv_in"]["kernel"]) == ("conv_h", "conv_w", "conv_in", "conv_out")
    attn = specs["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]
    assert tuple(attn["attn2"]["to_k"]["kernel"]) == ("context", "heads")
    assert tuple(attn["ff"]["net_0"]["proj"]["kernel"]) == ("embed", "mlp")
    params = init_params(UNet2D(config), jax.random.key(0), *args)
    assert all(isinstance(p, jax.Array) for p in jax.tree.leaves(params))
    assert jax.tree.structure(
        specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec)
    ) == (jax.tree.structure(params))


def test_config_round_trip_and_rejections():
    config = UNetConfig(cross_attention_dim=None, time_embedding=False, norm_num_groups=None)
    assert UNetConfig.from_dict(config.to_dict()) == config
    assert UNetConfig.from_diffusers(ref.SD21_UNET_CONFIG) == UNetConfig()
    with pytest.raises(UnsupportedConfigError, match="class_embed_type"):
        UNetConfig.from_diffusers({**TINY, "class_embed_type": "timestep"})
    with pytest.raises(UnsupportedConfigError, match="use_linear_projection"):
        UNetConfig.from_diffusers({**TINY, "use_linear_projection": False})
    with pytest.raises(UnsupportedConfigError, match="unknown config fields"):
        UNetConfig.from_dict({"widths": [1]})


def test_missing_inputs_are_clear_errors():
    config = UNetConfig.from_diffusers(TINY)
    x = jnp.zeros((1, 8, 8, 4))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        UNet2D(config).init(jax.random.key(0), x, 1.0)
    with pytest.raises(ValueError, match="timesteps"):
        UNet2D(config).init(jax.random.key(0), x, None, jnp.zeros((1, 2, 24)))
    with pytest.raises(ValueError, match="4 channels"):
        UNet2D(config).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), 1.0, jnp.zeros((1, 2, 24)))
