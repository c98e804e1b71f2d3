import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.train.accumulate import accumulate, split_micro_batches


def _loss(w, batch):
    return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)


def test_accumulated_gradient_equals_full_batch():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    batch = {
        "x": jnp.asarray(rng.normal(size=(12, 5)), jnp.float32),
        "y": jnp.asarray(rng.normal(size=(12, 3)), jnp.float32),
    }
    full = jax.value_and_grad(_loss)(w, batch)
    for n in (1, 2, 3, 4):
        loss, grad = jax.jit(
            lambda b, n=n: accumulate(lambda mb: jax.value_and_grad(_loss)(w, mb), b, n)
        )(batch)
        np.testing.assert_allclose(loss, full[0], rtol=1e-6)
        np.testing.assert_allclose(grad, full[1], rtol=1e-5, atol=1e-7)


def test_micro_batches_are_strided_and_sizes_checked():
    x = jnp.arange(6)
    np.testing.assert_array_equal(split_micro_batches(x, 2), [[0, 2, 4], [1, 3, 5]])
    with pytest.raises(ValueError, match="does not split into 4"):
        split_micro_batches(x, 4)
