"""TAESD's tiny decoder against diffusers' DecoderTiny (random weights, fp32, 1e-4), and its reader."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from adcsr_jax.models.adcsr import count_params
from adcsr_jax.models.taesd import TAESDConfig, TAESDDecoder, abstract_taesd_params
from adcsr_jax.testing import reference as ref
from adcsr_jax.weights.errors import CheckpointMismatchError
from adcsr_jax.weights.taesd import (
    load_taesd_decoder,
    taesd_decoder_params,
    to_diffusers_names,
    write_taesd_decoder,
)

torch = pytest.importorskip("torch")

SMALL = TAESDConfig(channels=8, num_blocks=(2, 1, 1))


def torch_decoder(cfg: TAESDConfig, seed: int = 0):
    from diffusers.models.autoencoders.vae import DecoderTiny

    torch.manual_seed(seed)
    model = DecoderTiny(
        in_channels=cfg.latent_channels,
        out_channels=cfg.out_channels,
        num_blocks=cfg.num_blocks,
        block_out_channels=(cfg.channels,) * len(cfg.num_blocks),
        upsampling_scaling_factor=2,
        act_fn="relu",
        upsample_fn="nearest",
    )
    return ref.randomize(model, seed, spread=0.3)


def test_published_size_param_count():
    """TAESD's decoder (64 channels, blocks 3/3/3/1): 1,222,531 params, as diffusers counts."""
    cfg = TAESDConfig()
    model = torch_decoder(cfg)
    assert count_params(abstract_taesd_params(cfg)) == sum(p.numel() for p in model.parameters())
    assert count_params(abstract_taesd_params(cfg)) == 1_222_531
    assert cfg.last_layer == "layers_18" and cfg.upscale == 8


@pytest.mark.parametrize("cfg", [SMALL, TAESDConfig(channels=16)])
def test_matches_diffusers_decoder_tiny(cfg):
    model = torch_decoder(cfg, seed=3)
    z = np.random.default_rng(0).normal(0, 2.5, (2, 3, 5, cfg.latent_channels)).astype(np.float32)
    with torch.no_grad():
        want = ref.nhwc(model(ref.nchw(z)))
    params = taesd_decoder_params(ref.state_dict_numpy(model), cfg)
    got = jax.jit(lambda p, x: TAESDDecoder(cfg).apply({"params": p}, x))(params, z)
    assert got.shape == (2, 3 * cfg.upscale, 5 * cfg.upscale, 3)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
    body_head = TAESDDecoder(cfg).apply(
        {"params": params}, TAESDDecoder(cfg).apply({"params": params}, z, method="body"),
        method="head",
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(body_head), np.asarray(got), atol=1e-6)


def test_reader_accepts_taesd_pth_and_autoencoder_tiny_layouts(tmp_path):
    cfg = SMALL
    sd = ref.state_dict_numpy(torch_decoder(cfg, seed=1))
    taesd_layout = {}
    for k, v in sd.items():  # taesd.py's Sequential counts the Clamp as entry 0
        index, rest = k.removeprefix("layers.").split(".", 1)
        taesd_layout[f"{int(index) + 1}.{rest}"] = v
    assert to_diffusers_names(taesd_layout, "x") == sd
    torch.save({k: torch.from_numpy(v) for k, v in taesd_layout.items()}, tmp_path / "d.pth")
    _, from_pth = load_taesd_decoder(tmp_path / "d.pth", cfg)
    direct = taesd_decoder_params(sd, cfg)
    jax.tree.map(np.testing.assert_array_equal, from_pth, direct)

    written = write_taesd_decoder(tmp_path / "tiny" / "taesd_decoder.safetensors", direct)
    _, back = load_taesd_decoder(written.parent, cfg)
    jax.tree.map(np.testing.assert_array_equal, back, direct)
    with_encoder = {f"decoder.{k}": v for k, v in sd.items()} | {"encoder.layers.0.weight": sd[
        "layers.0.weight"]}  # fmt: skip
    jax.tree.map(np.testing.assert_array_equal, taesd_decoder_params(with_encoder, cfg), direct)


def test_reader_errors_name_keys_and_shapes():
    cfg = SMALL
    sd = ref.state_dict_numpy(torch_decoder(cfg))
    bad = dict(sd)
    bad.pop("layers.0.bias")
    bad["layers.2.conv.0.weight"] = bad["layers.2.conv.0.weight"][:, :4]
    with pytest.raises(CheckpointMismatchError) as err:
        taesd_decoder_params(bad, cfg, source="broken.pth")
    msg = str(err.value)
    assert "broken.pth" in msg and "layers.0.bias" in msg and "layers.2.conv.0.weight" in msg
    with pytest.raises(CheckpointMismatchError, match="taesd_decoder.pth keys"):
        taesd_decoder_params({"conv_in.weight": sd["layers.0.weight"]}, cfg, source="sd.ckpt")
    with pytest.raises(CheckpointMismatchError, match="Clamp"):
        taesd_decoder_params({"0.weight": sd["layers.0.weight"]}, cfg)


def test_student_with_tiny_decoder_matches_torch():
    """AdcSR Table B.1 row 2: pruned UNet (conv_out -> 4 latent channels) + TAESD decoder, as a
    torch composition (AdcSR's UNet surgery on a diffusers UNet, then DecoderTiny)."""
    from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, split_params
    from adcsr_jax.testing import torch_adcsr as T
    from adcsr_jax.weights.adcsr_ckpt import student_params_from_torch
    from adcsr_jax.weights.mapping import params_to_torch
    from adcsr_jax.weights.prune import prune_unet_state_dict

    cfg = AdcSRConfig.tiny().replace(decoder_type="taesd", taesd_channels=8)
    sd_unet = ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=2)
    unet = T.prune_torch_unet(sd_unet, 0.75, 4)
    dec = torch_decoder(cfg.taesd_config(), seed=6)
    lr = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        x = torch.nn.functional.pixel_unshuffle(ref.nchw(lr), 2)
        want_f = T.pruned_unet_forward(unet, x)
        want = ref.nhwc(dec(want_f))
    sd = {f"unet.{k}": v for k, v in prune_unet_state_dict(
        ref.state_dict_numpy(sd_unet), 0.75, 12, 4).items()}  # fmt: skip
    sd |= {f"decoder.{k}": v for k, v in params_to_torch(
        taesd_decoder_params(ref.state_dict_numpy(dec), cfg.taesd_config())).items()}  # fmt: skip
    params = student_params_from_torch(sd, cfg)
    module = AdcSR(cfg)
    f = module.apply({"params": params}, lr, method=AdcSR.features)
    assert f.shape == (1, 16, 16, 4) and cfg.feature_space == "latent" and cfg.feature_channels == 4
    np.testing.assert_allclose(np.asarray(f), ref.nhwc(want_f), atol=1e-4, rtol=0)
    raw = module.apply({"params": params}, lr, method=AdcSR.raw)
    np.testing.assert_allclose(np.asarray(raw), want, atol=1e-4, rtol=0)
    trainable, frozen = split_params(params)
    assert sorted(trainable) == ["unet"] and sorted(frozen) == ["decoder"]
    assert cfg.trainable_keys == ("unet",)


def test_full_size_tiny_decoder_student_count():
    """Shapes only: 444,373,655 = 444M of Table B.1 (UNet 443.15M with a 4-channel conv_out,
    TAESD 1.22M); the channel-pruned student has 456,073,683."""
    from adcsr_jax.models.adcsr import AdcSRConfig, abstract_params

    p = abstract_params(AdcSRConfig(decoder_type="taesd"))
    assert count_params(p) == 444_373_655 and round(count_params(p) / 1e6) == 444
    assert count_params(p["decoder"]) == 1_222_531 and sorted(p) == ["decoder", "unet"]
