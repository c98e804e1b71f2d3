"""The im2col-matmul convolution equals XLA's convolution, and is only used where it should be."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from adcsr_jax.nn.axes import conv
from adcsr_jax.nn.conv import conv_general_dilated_for, im2col_conv

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    ("hw", "kernel", "stride", "padding"),
    [
        ((8, 8), 3, 1, ((1, 1), (1, 1))),
        ((5, 7), 3, 1, ((1, 1), (1, 1))),
        ((8, 6), 3, 2, ((1, 1), (1, 1))),  # UNet downsampler
        ((7, 9), 3, 2, ((0, 1), (0, 1))),  # VAE downsampler
        ((4, 4), 1, 1, ((0, 0), (0, 0))),  # 1x1 shortcut
    ],
)
def test_im2col_equals_xla_convolution(hw, kernel, stride, padding) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, *hw, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 6, 5)), jnp.float32)
    want = lax.conv_general_dilated(
        x, w, (stride, stride), padding, dimension_numbers=NHWC, precision="highest"
    )
    got = im2col_conv(x, w, (stride, stride), padding, precision="highest")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_module_switches_by_output_size() -> None:
    rng = np.random.default_rng(1)
    layer = conv(4, 3, matmul_max_pixels=16)
    small = jnp.asarray(rng.standard_normal((1, 4, 4, 3)), jnp.float32)
    large = jnp.asarray(rng.standard_normal((1, 8, 8, 3)), jnp.float32)
    params = layer.init(jax.random.key(0), small)
    plain = conv(4, 3)
    for x, matmul in ((small, True), (large, False)):
        jaxpr = str(jax.make_jaxpr(lambda p, x: layer.apply(p, x))(params, x))
        assert ("conv_general_dilated" not in jaxpr) == matmul
        np.testing.assert_allclose(layer.apply(params, x), plain.apply(params, x), atol=1e-5)


def test_pointwise_conv_is_a_matmul_at_any_size() -> None:
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 32, 32, 6)), jnp.float32)
    layer = conv(5, 1, matmul_max_pixels=16)
    params = layer.init(jax.random.key(0), x)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(layer.apply)(params, x))
    np.testing.assert_allclose(layer.apply(params, x), conv(5, 1).apply(params, x), atol=1e-5)


def test_off_means_flax_default() -> None:
    assert conv_general_dilated_for(None) is None
    assert conv_general_dilated_for(0) is None
