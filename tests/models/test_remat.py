"""``remat=True`` (``nn.remat`` on every UNet / VAE block) changes memory, never results: the same
params tree, outputs and gradients as without it, for the student and for an SD-style UNet."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.models import Decoder, UNet2D, UNetConfig, VAEConfig, init_params
from adcsr_jax.models import abstract_params_of as abstract_params
from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, random_params
from adcsr_jax.models.adcsr import abstract_params as student_abstract


def _shapes(tree):
    return jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)


def _value_and_grad(module, params, *args, method=None):
    def loss(p):
        out = module.apply({"params": p}, *args, method=method)
        return jnp.mean(out * jnp.cos(out))  # nonlinear in the output: a real backward pass

    return jax.jit(jax.value_and_grad(loss))(params)


def _assert_same(a, b) -> None:
    """Recomputation may fuse differently: equal up to fp32 summation-order rounding, relative to
    the largest gradient (biases in front of a GroupNorm get ~1e-10 noise instead of 0)."""
    (va, ga), (vb, gb) = a, b
    np.testing.assert_allclose(va, vb, rtol=1e-5)
    scale = max(float(np.abs(y).max()) for y in jax.tree.leaves(gb))
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6 * scale, err_msg=str(path))


def test_remat_flag_reaches_every_block() -> None:
    config = AdcSRConfig.tiny().replace(remat=True)
    assert config.unet_config().remat and config.decoder_config().remat
    assert AdcSRConfig.from_dict(config.to_dict()) == config
    assert not AdcSRConfig.tiny().unet_config().remat


def test_decoder_remat_same_params_outputs_and_grads() -> None:
    config = VAEConfig(block_out_channels=(32, 32), layers_per_block=1)
    remat = dataclasses.replace(config, remat=True)
    z = jnp.asarray(np.random.default_rng(3).standard_normal((1, 4, 4, 4)), jnp.float32)
    params = init_params(Decoder(config), jax.random.key(1), z)
    assert _shapes(abstract_params(Decoder(remat), z)) == _shapes(params)
    _assert_same(
        _value_and_grad(Decoder(config), params, z), _value_and_grad(Decoder(remat), params, z)
    )


@pytest.mark.slow  # ~2 min compile (16 on a loaded 2-core box); stage 2's remat test covers it
def test_student_remat_same_params_outputs_and_grads() -> None:
    config = AdcSRConfig.tiny()
    remat = config.replace(remat=True)
    assert remat.unet_config().remat and remat.decoder_config().remat
    template = student_abstract(config)
    assert _shapes(student_abstract(remat)) == _shapes(template)
    params = random_params(template, seed=3)
    lr = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)), jnp.float32)
    _assert_same(  # raw = features (UNet + mid block) then the decoder tail
        _value_and_grad(AdcSR(config), params, lr, method=AdcSR.raw),
        _value_and_grad(AdcSR(remat), params, lr, method=AdcSR.raw),
    )


@pytest.mark.slow  # 2-level UNet grads, compiled twice: ~3 min on a shared 2-core CPU
def test_sd_unet_remat_same_outputs_and_grads() -> None:
    config = UNetConfig(
        block_out_channels=(32, 64), num_attention_heads=(2, 2), cross_attention_dim=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )  # fmt: skip
    remat = dataclasses.replace(config, remat=True)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 8, 8, 4)), jnp.float32)
    ctx = jnp.asarray(np.random.default_rng(2).standard_normal((1, 5, 16)), jnp.float32)
    t = jnp.array([999.0])
    params = init_params(UNet2D(config), jax.random.key(0), x, t, ctx)
    assert _shapes(abstract_params(UNet2D(remat), x, t, ctx)) == _shapes(params)
    _assert_same(
        _value_and_grad(UNet2D(config), params, x, t, ctx),
        _value_and_grad(UNet2D(remat), params, x, t, ctx),
    )
