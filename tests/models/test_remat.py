"""``remat=True`` (``nn.remat`` on every UNet / VAE block) changes memory, never results: the same
params tree, outputs and gradients as without it, for the student and for an SD-style UNet."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.models import UNet2D, UNetConfig, abstract_params, init_params
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
    """Recomputation may fuse differently: equal to fp32 summation-order rounding."""
    (va, ga), (vb, gb) = a, b
    np.testing.assert_allclose(va, vb, rtol=1e-5)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(ga), jax.tree.leaves(gb)):
        scale = float(np.abs(y).max()) + 1e-12
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5 * scale, err_msg=str(path))


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
