"""The half decoder's layouts: SD pruning, AdcSR's halfDecoder.ckpt, latent-diffusion names."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.models.vae import Decoder, VAEConfig
from adcsr_jax.weights import half_decoder as hd
from adcsr_jax.weights.adcsr_ckpt import read_half_decoder
from adcsr_jax.weights.errors import CheckpointMismatchError
from adcsr_jax.weights.networks import decoder_params_from_torch

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from adcsr_jax.testing.torch_stage1 import (  # noqa: E402
    adcsr_torch_decoder,
    load_like_train_py,
    randomise,
    torch_out,
)

SD_TINY = VAEConfig(block_out_channels=(64, 64, 128, 128))
HALF_TINY = hd.half_decoder_config(SD_TINY)


def flax_out(config: VAEConfig, params, z: np.ndarray) -> np.ndarray:
    return np.asarray(Decoder(config).apply({"params": params}, jnp.asarray(z)))


@pytest.fixture(scope="module")
def latents() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def sd_decoder_sd() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    dec = adcsr_torch_decoder(SD_TINY.block_out_channels)
    randomise(dec, 0)
    return {k: v.numpy() for k, v in dec.state_dict().items()}


def test_pruned_decoder_fits_diffusers_and_matches_flax(sd_decoder_sd, latents) -> None:
    """Torch-side pruning loads strictly into the half-width diffusers Decoder, and the Flax-side
    pruning of the converted SD decoder computes the same function."""
    half_sd = hd.prune_decoder_state_dict(sd_decoder_sd)
    ref = adcsr_torch_decoder(HALF_TINY.block_out_channels)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in half_sd.items()}, strict=True)
    sd_params = decoder_params_from_torch(sd_decoder_sd, SD_TINY)
    params = hd.prune_decoder_params(sd_params, HALF_TINY)
    np.testing.assert_allclose(flax_out(HALF_TINY, params, latents), torch_out(ref, latents),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    assert half_sd["conv_in.weight"].shape == (64, 4, 3, 3)
    assert half_sd["conv_out.weight"].shape == (3, 32, 3, 3)


def test_full_size_half_config() -> None:
    cfg = hd.half_decoder_config(VAEConfig())
    assert cfg.block_out_channels == (64, 128, 256, 256) and cfg.norm_num_groups == 32


def test_written_ckpt_loads_strictly_like_train_py(sd_decoder_sd, latents, tmp_path) -> None:
    params = hd.prune_decoder_params(decoder_params_from_torch(sd_decoder_sd, SD_TINY), HALF_TINY)
    path = hd.write_half_decoder_ckpt(tmp_path / hd.CKPT_NAME, params)
    ref = load_like_train_py(path)
    np.testing.assert_allclose(torch_out(ref, latents), flax_out(HALF_TINY, params, latents),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    config, again = hd.load_half_decoder(path)
    assert config.block_out_channels == HALF_TINY.block_out_channels
    jax.tree.map(np.testing.assert_array_equal, again, params)
    folder = hd.save_half_decoder(tmp_path / "half_decoder", HALF_TINY, params)
    config2, again2 = hd.load_half_decoder(folder)
    assert config2 == HALF_TINY
    jax.tree.map(np.testing.assert_array_equal, again2, params)


def test_latent_diffusion_layout_loads(latents, tmp_path) -> None:
    """A decoder trained with latent-diffusion / taming (``decoder.up.N.block.M...``, AdcSR issue
    #21) loads, computing what taming's ``Decoder`` computes; other entries are ignored."""
    tmodel = pytest.importorskip("taming.modules.diffusionmodules.model")
    torch.manual_seed(1)
    ref = tmodel.Decoder(ch=32, out_ch=3, ch_mult=(1, 1, 2, 2), num_res_blocks=2,
                         attn_resolutions=[], in_channels=3, resolution=32, z_channels=4)  # fmt: skip
    randomise(ref, 1)
    ref.eval()
    sd = {f"decoder.{k}": v for k, v in ref.state_dict().items()}
    sd["encoder.conv_in.weight"] = torch.zeros(32, 3, 3, 3)  # a whole AutoencoderKL's entries
    sd["loss.logvar"] = torch.zeros(())
    path = tmp_path / "ldm.ckpt"
    torch.save({"state_dict": sd, "global_step": 10}, path)
    config, params = hd.load_half_decoder(path)
    assert config.block_out_channels == (32, 32, 64, 64)
    np.testing.assert_allclose(flax_out(config, params, latents), torch_out(ref, latents),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    # `adcsr convert adcsr --half-decoder` and stage 2 read through the same function.
    names = read_half_decoder(path)
    assert "up_blocks.0.upsamplers.0.conv.weight" in names
    assert names["mid_block.attentions.0.to_q.weight"].ndim == 2
    # ... and the converted names load strictly into diffusers' Decoder (train.py's layout).
    out = tmp_path / hd.CKPT_NAME
    hd.write_half_decoder_ckpt(out, params)
    np.testing.assert_allclose(torch_out(load_like_train_py(out), latents),
                               torch_out(ref, latents), rtol=1e-4, atol=1e-5)  # fmt: skip


def test_mismatch_names_every_key(sd_decoder_sd, tmp_path) -> None:
    sd = {f"decoder.{k}": torch.from_numpy(v) for k, v in
          hd.prune_decoder_state_dict(sd_decoder_sd).items()}  # fmt: skip
    del sd["decoder.up_blocks.1.resnets.2.conv2.weight"]
    del sd["decoder.conv_norm_out.bias"]
    sd["decoder.up_blocks.9.resnets.0.conv1.weight"] = torch.zeros(3)
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        hd.load_half_decoder(path, HALF_TINY)
    text = str(err.value)
    for key in ("up_blocks.1.resnets.2.conv2.weight", "conv_norm_out.bias",
                "up_blocks.9.resnets.0.conv1.weight"):  # fmt: skip
        assert key in text
    assert "2 missing" in text and "1 unexpected" in text


def test_no_decoder_entries_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"encoder.w": torch.zeros(1)}}, path)
    with pytest.raises(Exception, match="no entry name contains 'decoder'"):
        hd.load_half_decoder(path)


def test_stage2_takes_a_file_or_a_stage1_workdir(sd_decoder_sd, tmp_path) -> None:
    """``model.half_decoder`` of stage 2: a halfDecoder.ckpt as it is, or a stage-1 workdir
    resolved to the halfDecoder.ckpt stage 1 exports there; otherwise a clear error naming both
    what was looked for and what the folder holds."""
    from adcsr_jax.weights.errors import CheckpointReadError
    from adcsr_jax.weights.stage2_weights import load_stage2_weights

    params = hd.prune_decoder_params(decoder_params_from_torch(sd_decoder_sd, SD_TINY), HALF_TINY)
    workdir = tmp_path / "stage1_run"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "metrics.jsonl").write_text("")
    with pytest.raises(CheckpointReadError) as err:
        hd.resolve_half_decoder_file(workdir)
    text = str(err.value)
    assert str(workdir / hd.CKPT_NAME) in text  # what was looked for
    assert "checkpoints/" in text and "metrics.jsonl" in text  # what exists
    assert "--export-only" in text
    with pytest.raises(CheckpointReadError, match="no such file or folder"):
        hd.resolve_half_decoder_file(tmp_path / "absent")
    # stage 2 resolves before reading anything else
    with pytest.raises(CheckpointReadError, match="metrics.jsonl"):
        load_stage2_weights(tmp_path / "no_sd21", tmp_path / "no_osediff", workdir)
    ckpt = hd.write_half_decoder_ckpt(workdir / hd.CKPT_NAME, params)
    assert hd.resolve_half_decoder_file(workdir) == ckpt
    assert hd.resolve_half_decoder_file(ckpt) == ckpt
    _, again = hd.load_half_decoder(hd.resolve_half_decoder_file(workdir), HALF_TINY)
    jax.tree.map(np.testing.assert_array_equal, again, params)
    with pytest.raises(Exception) as err:  # past the half decoder: now SD 2.1 is what is missing
        load_stage2_weights(tmp_path / "no_sd21", tmp_path / "no_osediff", workdir)
    assert "no_sd21" in str(err.value) and "halfDecoder" not in str(err.value)
