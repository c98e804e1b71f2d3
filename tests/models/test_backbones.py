"""``models.backbones.max_pool`` (strided slices) against torch's ``max_pool2d``: values, NaN and
the gradient stage 1's LPIPS-vgg loss takes through it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adcsr_jax.models.backbones import max_pool


@pytest.mark.parametrize(
    ("shape", "size", "stride"), [((2, 17, 12, 5), 3, 2), ((1, 9, 8, 3), 2, 2)]
)
def test_max_pool_matches_torch(shape: tuple[int, ...], size: int, stride: int) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x[0, 3, 4, 1] = np.nan
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
    ref = torch.nn.functional.max_pool2d(xt, size, stride)
    out = max_pool(jnp.asarray(x), size, stride)
    np.testing.assert_array_equal(np.asarray(out), ref.detach().permute(0, 2, 3, 1).numpy())

    finite = np.nan_to_num(x, nan=0.5)
    g = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    xt = torch.from_numpy(finite).permute(0, 3, 1, 2).requires_grad_()
    torch.nn.functional.max_pool2d(xt, size, stride).backward(
        torch.from_numpy(g).permute(0, 3, 1, 2)
    )
    grad = jax.grad(lambda a: jnp.sum(max_pool(a, size, stride) * g))(jnp.asarray(finite))
    np.testing.assert_allclose(np.asarray(grad), xt.grad.permute(0, 2, 3, 1).numpy(), atol=1e-6)
