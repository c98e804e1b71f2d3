"""The OSEDiff teacher against diffusers modules run the way AdcSR's ``train.py`` runs them,
and its checkpoints (OSEDiff's PEFT LoRA file, AdcSR's merged file) written in their layouts.

The LoRA reference is PEFT's *unmerged* forward (``out + 2.0 * B(A(x))`` per targeted layer,
attached with hooks), so the merge is checked against a different computation.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax import cli
from adcsr_jax.models.osediff import OSEDiff, OSEDiffConfig, abstract_params, alphas_cumprod

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from adcsr_jax.testing import reference as ref  # noqa: E402
from adcsr_jax.testing import torch_adcsr as T  # noqa: E402
from adcsr_jax.weights import CheckpointMismatchError, CheckpointReadError  # noqa: E402
from adcsr_jax.weights.osediff_ckpt import (  # noqa: E402
    convert_osediff,
    load_teacher,
    merge_peft_state_dict,
    teacher_params_from_torch,
    teacher_state_dict,
)

LR = np.random.default_rng(0).uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
TEXT = np.random.default_rng(1).standard_normal((2, 7, 32)).astype(np.float32)
KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def torch_parts():
    unet = ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=7)
    vae = ref.torch_vae(T.TINY_SD_VAE_CONFIG, seed=8)
    half = T.torch_half_decoder(T.TINY_HALF_DECODER_CONFIG, seed=9)
    return unet, vae, half


@pytest.fixture(scope="module")
def sd21_folder(torch_parts, tmp_path_factory) -> Path:
    unet, vae, _ = torch_parts
    folder = tmp_path_factory.mktemp("sd21")
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    return folder


_RUN = {}


def _run_teacher(config: OSEDiffConfig, params, z_ref: np.ndarray, z0_ref: np.ndarray):
    """Our stages, one compiled function per config: z (mean), z (sample), z0 from the torch z,
    image and f_T from the torch z0, and the end-to-end image and f_T."""
    if config not in _RUN:
        module = OSEDiff(config)

        def run(p, lr, text, key, z, z0):
            v = {"params": p}
            return {
                "z": module.apply(v, lr, method=OSEDiff.encode),
                "z_sampled": module.apply(v, lr, key, method=OSEDiff.encode),
                "z0": module.apply(v, z, text, method=OSEDiff.denoise),
                "image": module.apply(v, z0, method=OSEDiff.decode),
                "features": module.apply(v, z0, method=OSEDiff.latent_features),
                "end_image": module.apply(v, lr, text),
                "end_features": module.apply(v, lr, text, method=OSEDiff.features),
            }

        _RUN[config] = jax.jit(run)
    out = _RUN[config](params, LR, TEXT, KEY, z_ref, z0_ref)
    return {k: np.asarray(v) for k, v in out.items()}


def _torch_teacher(unet, vae, half) -> dict[str, np.ndarray]:
    # the same noise our sample_latent draws (B, H/2, W/2, 4)
    noise = np.asarray(jax.random.normal(KEY, (2, 8, 12, 4), jnp.float32))
    with torch.no_grad():
        out = T.torch_teacher(vae, unet, ref.nchw(LR), torch.from_numpy(TEXT), None, half)
        sampled = T.torch_teacher(vae, unet, ref.nchw(LR), torch.from_numpy(TEXT), ref.nchw(noise))
    out = {k: ref.nhwc(v) for k, v in out.items()}
    out["z_sampled"] = ref.nhwc(sampled["z"])
    return out


def _compare(config: OSEDiffConfig, params, want: dict[str, np.ndarray]) -> None:
    """Each stage from the same input as torch's, max abs error 1e-4. z0 = (z - 0.998 eps) / 0.068
    multiplies the UNet's rounding by 14.6, so z0 is compared as eps (times sqrt(abar)). End to
    end, that factor and a random UNet's gain turn 3e-7 latent rounding into ~4e-4 in z0, so the
    whole chain is compared relative to its magnitude (1e-4 x max |value|)."""
    got = _run_teacher(config, params, want["z"], want["z0"])
    root_abar = config.alpha_bar**0.5
    got["z0"], want["z0"] = got["z0"] * root_abar, want["z0"] * root_abar
    for key in ("z", "z_sampled", "z0", "image", "features"):
        assert got[key].shape == want[key].shape, key
        np.testing.assert_allclose(got[key], want[key], atol=1e-4, rtol=0, err_msg=key)
    for key, ref_key in (("end_image", "image"), ("end_features", "features")):
        scale = max(1.0, float(np.abs(want[ref_key]).max()))
        np.testing.assert_allclose(got[key], want[ref_key], atol=1e-4 * scale, rtol=0, err_msg=key)
    assert np.abs(got["z"] - got["z_sampled"]).max() > 1e-3  # a sample is not the mean


def test_schedule_constant() -> None:
    from adcsr_jax.testing.torch_adcsr import sd_alphas_cumprod

    np.testing.assert_allclose(alphas_cumprod(), sd_alphas_cumprod().numpy(), rtol=2e-6)
    assert abs(OSEDiffConfig().alpha_bar - 0.00466010) < 1e-8


# The fast paths themselves are checked against the plain ones on the student
# (tests/models/test_adcsr.py); through the whole teacher they are a slow test.
@pytest.mark.parametrize(
    "fast",
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["plain", "cpu-fast-paths"],
)
def test_teacher_matches_torch(torch_parts, fast: bool) -> None:
    unet, vae, half = torch_parts
    config = OSEDiffConfig.tiny()
    if fast:  # 8x12 latent: 96 tokens in 3 chunks of 32; UNet convs on <= 24-pixel maps as matmuls
        config = config.with_fast_paths(attention_query_chunk=32, conv_matmul_max_pixels=24)
    sd = teacher_state_dict(
        ref.state_dict_numpy(unet), ref.state_dict_numpy(vae), ref.state_dict_numpy(half)
    )
    want = _torch_teacher(unet, vae, half)
    assert want["image"].shape == (2, 64, 96, 3) and want["features"].shape == (2, 8, 12, 64)
    _compare(config, teacher_params_from_torch(sd, config), want)


def test_osediff_lora_file_merges_like_peft(torch_parts, sd21_folder, tmp_path: Path) -> None:
    import copy

    unet, vae, half = torch_parts
    pkl = T.random_osediff_pkl(unet, vae, rank=4, seed=11)
    torch.save(pkl, tmp_path / "osediff.pkl")
    torch.save({"state_dict": {f"decoder.{k}": v for k, v in half.state_dict().items()}},
               tmp_path / "halfDecoder.ckpt")  # fmt: skip
    config, params = convert_osediff(
        tmp_path / "osediff.pkl", sd21_folder, tmp_path / "halfDecoder.ckpt"
    )
    assert config == OSEDiffConfig.tiny()
    lora_unet, lora_vae = copy.deepcopy(unet), copy.deepcopy(vae)
    T.attach_runtime_lora(lora_unet, pkl["state_dict_unet"], 4)
    T.attach_runtime_lora(lora_vae, pkl["state_dict_vae"], 4)
    _compare(config, params, _torch_teacher(lora_unet, lora_vae, half))
    # The merge really changed the weights (scaling 2.0).
    delta = params["unet"]["conv_out"]["kernel"] - np.asarray(
        unet.conv_out.weight.detach()
    ).transpose(2, 3, 1, 0)
    assert np.abs(delta).max() > 1e-4


def test_adcsr_merged_file_and_cli(torch_parts, sd21_folder, tmp_path: Path) -> None:
    unet, vae, _ = torch_parts
    torch.save({"vae": vae.state_dict(), "unet": unet.state_dict()}, tmp_path / "osediff.pkl")
    out = tmp_path / "teacher"
    args = ["convert", "osediff", "--sd21", str(sd21_folder), "--lora", str(tmp_path / "osediff.pkl"),
            "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    module, params, config = load_teacher(out)
    assert config.half_decoder is None and config.unet == OSEDiffConfig.tiny().unet
    want = teacher_params_from_torch(
        teacher_state_dict(ref.state_dict_numpy(unet), ref.state_dict_numpy(vae)), config
    )
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert isinstance(module, OSEDiff)


def test_lora_file_problems_are_named(torch_parts, sd21_folder, tmp_path: Path) -> None:
    unet, vae, _ = torch_parts
    pkl = T.random_osediff_pkl(unet, vae, rank=4, seed=12)
    key = next(k for k in pkl["state_dict_unet"] if ".lora_B." in k)
    del pkl["state_dict_unet"][key]
    torch.save(pkl, tmp_path / "bad.pkl")
    with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")):
        convert_osediff(tmp_path / "bad.pkl", sd21_folder)
    with pytest.raises(ValueError, match="SD 2.1"):
        convert_osediff(tmp_path / "bad.pkl")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pkl")
    with pytest.raises(CheckpointReadError, match="other.pkl"):
        convert_osediff(tmp_path / "other.pkl", sd21_folder)
    base = {"w.weight": np.zeros((3, 5), np.float32)}
    lora = {"w.lora_A.x.weight": np.ones((2, 5), np.float32),
            "w.lora_B.x.weight": np.ones((3, 2), np.float32)}  # fmt: skip
    with pytest.raises(CheckpointMismatchError, match="lora_A"):
        merge_peft_state_dict(base, lora, rank=4)  # rank mismatch
    merged = merge_peft_state_dict(base, lora, rank=2)
    np.testing.assert_array_equal(merged["w.weight"], np.full((3, 5), 2 * 4.0))


def test_full_config_shapes() -> None:
    params = abstract_params(OSEDiffConfig.full())
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))  # noqa: E731
    assert count(params["unet"]) == 865_910_724
    assert count(params["vae"]) == 83_653_863
    assert count(params["half_decoder"]) == 9_472 + 2_626_048
