"""AutoencoderKL / Decoder against diffusers (random weights, fp32, max abs error <= 1e-4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.models import AutoencoderKL, Decoder, VAEConfig, abstract_params_of
from adcsr_jax.models.vae import sample_latent
from adcsr_jax.testing import reference as ref
from adcsr_jax.weights import decoder_params_from_torch, vae_params_from_torch

torch = pytest.importorskip("torch")

TINY = {
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "norm_num_groups": 8,
    "latent_channels": 4,
}


def _apply(module, params, *args, method=None):
    fn = jax.jit(lambda p, *a: module.apply({"params": p}, *a, method=method))
    return jax.tree.map(np.asarray, fn(params, *args))


def test_encode_decode_match_diffusers():
    model = ref.torch_vae(TINY, seed=4)
    with torch.no_grad():  # push some logvars past the clamp
        model.quant_conv.bias[5] += 40.0
        model.quant_conv.bias[6] -= 60.0
    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, (2, 16, 12, 3)).astype(np.float32)
    z = rng.standard_normal((2, 5, 7, 4)).astype(np.float32)
    with torch.no_grad():
        dist = model.encode(ref.nchw(img)).latent_dist
        want_mean, want_logvar = ref.nhwc(dist.mean), ref.nhwc(dist.logvar)
        want_image = ref.nhwc(model.decode(ref.nchw(z)).sample)
    config = VAEConfig.from_diffusers(TINY)
    params = vae_params_from_torch(ref.state_dict_numpy(model), config)
    vae = AutoencoderKL(config)
    mean, logvar = _apply(vae, params, img, method="encode")
    np.testing.assert_allclose(mean, want_mean, atol=1e-4, rtol=0)
    np.testing.assert_allclose(logvar, want_logvar, atol=1e-4, rtol=0)
    assert logvar.max() == 20.0 and logvar.min() == -30.0
    np.testing.assert_allclose(_apply(vae, params, z, method="decode"), want_image, atol=1e-4)


def test_half_width_decoder_stem_and_tail_match_diffusers():
    """AdcSR's half decoder shape (widths differ from the encoder's), called in two parts."""
    from diffusers.models.autoencoders.vae import Decoder as TorchDecoder

    widths = [16, 32, 64, 64]
    torch.manual_seed(0)
    model = ref.randomize(
        TorchDecoder(
            in_channels=4,
            out_channels=3,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=widths,
            layers_per_block=2,
            norm_num_groups=16,
        ),
        seed=5,
    )
    z = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        feat = model.mid_block(model.conv_in(ref.nchw(z)))
        want_feat = ref.nhwc(feat)
        want_image = ref.nhwc(model(ref.nchw(z)))
    config = VAEConfig(
        block_out_channels=(128, 256, 512, 512),
        decoder_block_out_channels=tuple(widths),
        norm_num_groups=16,
    )
    params = decoder_params_from_torch(ref.state_dict_numpy(model), config)
    decoder = Decoder(config)
    feat = _apply(decoder, params, z, method="stem")
    np.testing.assert_allclose(feat, want_feat, atol=1e-4, rtol=0)
    np.testing.assert_allclose(_apply(decoder, params, feat, method="tail"), want_image, atol=1e-4)
    np.testing.assert_allclose(_apply(decoder, params, z), want_image, atol=1e-4, rtol=0)


def test_unused_decoder_parts_get_no_params():
    config = VAEConfig(
        decoder_block_out_channels=(16, 32), block_out_channels=(16, 32), norm_num_groups=8
    )
    tail = abstract_params_of(Decoder(config), jnp.zeros((1, 2, 2, 32)), method="tail")
    assert sorted(tail) == ["conv_norm_out", "conv_out", "up_blocks_0", "up_blocks_1"]
    assert "upsamplers_0" in tail["up_blocks_0"] and "upsamplers_0" not in tail["up_blocks_1"]
    stem = abstract_params_of(Decoder(config), jnp.zeros((1, 2, 2, 4)), method="stem")
    assert sorted(stem) == ["conv_in", "mid_block"]


def test_sample_latent_statistics_and_config_round_trip():
    mean = jnp.full((4, 16, 16, 4), 2.0)
    logvar = jnp.full((4, 16, 16, 4), np.log(0.25))
    z = sample_latent(mean, logvar, jax.random.key(0))
    assert abs(float(z.mean()) - 2.0) < 0.05 and abs(float(z.std()) - 0.5) < 0.05
    config = VAEConfig(decoder_block_out_channels=(64, 128, 256, 256))
    assert VAEConfig.from_dict(config.to_dict()) == config
    assert VAEConfig.from_diffusers(ref.SD21_VAE_CONFIG) == VAEConfig()
    assert VAEConfig().scaling_factor == 0.18215
