"""``nn.conv.late_backward``: the convolution's own gradients, bitwise, without XLA keeping one
transposed copy of every frozen kernel alive across backward passes (what stage 2's three passes
through the discriminator did: 2 GiB at the step's peak)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.nn.axes import conv
from adcsr_jax.nn.conv import late_backward

DIMS = ("NHWC", "HWIO", "NHWC")


def test_gradients_are_bitwise_those_of_the_convolution() -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 9, 7, 5)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, 5, 6)), jnp.float32)
    for stride, pad in (((1, 1), ((1, 1), (1, 1))), ((2, 2), ((0, 1), (1, 0)))):

        def loss(c, a, b, stride=stride, pad=pad):
            return jnp.sum(jnp.sin(c(a, b, stride, pad, dimension_numbers=DIMS)))

        plain = jax.jit(
            jax.value_and_grad(lambda a, b: loss(jax.lax.conv_general_dilated, a, b), (0, 1))
        )
        late = jax.jit(jax.value_and_grad(lambda a, b: loss(late_backward(None), a, b), (0, 1)))
        (v0, g0), (v1, g1) = plain(x, k), late(x, k)
        np.testing.assert_array_equal(v0, v1)
        for a, b in zip(g0, g1, strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_projects_convs_use_it() -> None:
    module = conv(4, 3)
    x = jnp.ones((1, 5, 5, 3))
    params = module.init(jax.random.key(0), x)
    assert "custom_vjp_call" in str(jax.make_jaxpr(module.apply)(params, x))


def _temps_in_kernels(conv_fn) -> float:
    """XLA's temporaries, in kernels, of the input gradients through two passes (frozen kernels)."""
    layers, c = 6, 256

    def net(ws, x):
        for w in ws:
            x = jnp.tanh(conv_fn(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DIMS))
        return x

    def f(x1, x2, ws):
        return jnp.sum(net(ws, x1) ** 2) + jnp.sum(jnp.sin(net(ws, x2)))

    x = jax.ShapeDtypeStruct((1, 8, 8, c), jnp.float32)
    ws = [jax.ShapeDtypeStruct((3, 3, c, c), jnp.float32)] * layers
    compiled = jax.jit(jax.grad(f, (0, 1))).lower(x, x, ws).compile()
    return compiled.memory_analysis().temp_size_in_bytes / (9 * c * c * 4)


def test_transposed_kernels_are_not_held_across_passes() -> None:
    plain, late = (
        _temps_in_kernels(jax.lax.conv_general_dilated),
        _temps_in_kernels(late_backward(None)),
    )
    assert plain > 5.5, plain  # XLA:CPU: one transposed copy of each of the 6 kernels, shared
    assert late < 3.0, late  # one or two at a time
