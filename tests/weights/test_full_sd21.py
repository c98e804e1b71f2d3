"""Full-size SD 2.1-base UNet and VAE: parameter counts and parity through the public loaders.

Slow (several GB, minutes): run under the heavy-job lock,
``flock /tmp/adcsr-heavy.lock .venv/bin/python -m pytest -m slow -q tests/weights/test_full_sd21.py``.
"""

from __future__ import annotations

import gc

import jax
import numpy as np
import pytest

from adcsr_jax.testing import reference as ref
from adcsr_jax.weights import load_unet, load_vae

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def _count(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def test_sd21_unet_param_count_and_parity_at_32x32(tmp_path):
    model = ref.torch_unet(ref.SD21_UNET_CONFIG, seed=11)
    assert sum(p.numel() for p in model.parameters()) == 865_910_724
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 32, 32, 4), np.float32)
    ctx = rng.standard_normal((1, 77, 1024), np.float32)
    with torch.no_grad():
        want = ref.nhwc(model(ref.nchw(x), 999, torch.from_numpy(ctx)).sample)
    model.save_pretrained(tmp_path / "unet")
    del model
    gc.collect()
    module, params = load_unet(tmp_path)  # a pipeline root with unet/
    assert _count(params) == 865_910_724
    got = np.asarray(jax.jit(module.apply)({"params": params}, x, 999.0, ctx))
    err = float(np.abs(got - want).max())
    print(f"SD2.1 UNet 32x32: max abs err {err:.2e}, max |out| {np.abs(want).max():.3f}")
    assert err <= 1e-4, (err, float(np.abs(want).max()))


def test_sd21_vae_param_count_and_parity_at_32x32_latent(tmp_path):
    model = ref.torch_vae(ref.SD21_VAE_CONFIG, seed=12)
    assert sum(p.numel() for p in model.parameters()) == 83_653_863
    rng = np.random.default_rng(1)
    img = rng.uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    z = rng.standard_normal((1, 32, 32, 4)).astype(np.float32)
    with torch.no_grad():
        dist = model.encode(ref.nchw(img)).latent_dist
        want_mean, want_logvar = ref.nhwc(dist.mean), ref.nhwc(dist.logvar)
        want_image = ref.nhwc(model.decode(ref.nchw(z)).sample)
    model.save_pretrained(tmp_path / "vae")
    module, params = load_vae(tmp_path / "vae")
    assert _count(params) == 83_653_863
    encode = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode"))
    decode = jax.jit(lambda p, x: module.apply({"params": p}, x, method="decode"))
    mean, logvar = encode(params, img)
    np.testing.assert_allclose(np.asarray(mean), want_mean, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(logvar), want_logvar, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(decode(params, z)), want_image, atol=1e-4, rtol=0)
