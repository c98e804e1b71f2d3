"""Loading diffusers checkpoints through the public API, our own format, and every error path."""

from __future__ import annotations

import json
import pickle

import jax
import numpy as np
import pytest
from flax import traverse_util

from adcsr_jax.models import UNet2D, UnsupportedConfigError
from adcsr_jax.testing import reference as ref
from adcsr_jax.weights import (
    CheckpointMismatchError,
    CheckpointReadError,
    load_converted,
    load_unet,
    load_vae,
    params_to_torch,
    read_state_dict,
    save_converted,
    strip_module_prefix,
    strip_prefix,
)

torch = pytest.importorskip("torch")

UNET = ref.TINY_UNET_CONFIG
VAE = {
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "norm_num_groups": 8,
}


def _flat(params):
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def _assert_same(a, b):
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=str(k))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A diffusers-style pipeline folder with tiny random unet/ and vae/ (safetensors)."""
    root = tmp_path_factory.mktemp("pipe")
    unet, vae = ref.torch_unet(UNET, seed=7), ref.torch_vae(VAE, seed=8)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    return root, unet, vae


def test_load_unet_from_pipeline_matches_torch(pipeline):
    root, unet, _ = pipeline
    module, params = load_unet(root)  # pipeline root: picks unet/
    assert isinstance(module, UNet2D)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 8, 4), np.float32)
    ctx = rng.standard_normal((1, 5, 24), np.float32)
    with torch.no_grad():
        want = ref.nhwc(unet(ref.nchw(x), 321, torch.from_numpy(ctx)).sample)
    got = jax.jit(module.apply)({"params": params}, x, 321.0, ctx)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_load_vae_folder_matches_torch(pipeline):
    root, _, vae = pipeline
    module, params = load_vae(root / "vae")
    rng = np.random.default_rng(1)
    img = rng.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
    z = rng.standard_normal((1, 4, 4, 4)).astype(np.float32)
    with torch.no_grad():
        dist = vae.encode(ref.nchw(img)).latent_dist
        image = ref.nhwc(vae.decode(ref.nchw(z)).sample)
    encode = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode"))
    mean, logvar = encode(params, img)
    np.testing.assert_allclose(np.asarray(mean), ref.nhwc(dist.mean), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(logvar), ref.nhwc(dist.logvar), atol=1e-4, rtol=0)
    decode = jax.jit(lambda p, x: module.apply({"params": p}, x, method="decode"))
    np.testing.assert_allclose(np.asarray(decode(params, z)), image, atol=1e-4, rtol=0)
    assert module.config.scaling_factor == 0.18215


def test_single_files_bin_and_safetensors_give_same_params(pipeline, tmp_path):
    root, unet, _ = pipeline
    _, base = load_unet(root / "unet")
    unet.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "diffusion_pytorch_model.bin").is_file()
    _assert_same(load_unet(tmp_path / "bin")[1], base)
    # a lone file: config from the argument
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((root / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    config = load_unet(root / "unet")[0].config
    _assert_same(load_unet(lone, config=config)[1], base)
    # a Lightning-style .ckpt with a nested state_dict and a DDP prefix
    sd = {f"module.{k}": v for k, v in unet.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "x.ckpt")
    read = strip_module_prefix(read_state_dict(tmp_path / "x.ckpt"))
    assert read.keys() == unet.state_dict().keys()
    assert strip_prefix({"decoder.a": 1, "encoder.b": 2}, "decoder.") == {"a": 1}
    # the inverse mapping reproduces the torch state dict
    back = params_to_torch(base)
    for k, v in unet.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)


def test_legacy_vae_attention_names(pipeline, tmp_path):
    root, _, vae = pipeline
    _, base = load_vae(root / "vae")
    legacy = {}
    rename = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    for k, v in vae.state_dict().items():
        for new, old in rename.items():
            if ".attentions.0." in k and f".{new}." in k:
                k = k.replace(f".{new}.", f".{old}.")
                if v.ndim == 2 and old == "query":  # old LDM-era files stored some as 1x1 convs
                    v = v[:, :, None, None]
        legacy[k] = v
    assert any(".proj_attn." in k for k in legacy) and any(".query." in k for k in legacy)
    folder = tmp_path / "legacy_vae"
    folder.mkdir()
    torch.save(legacy, folder / "diffusion_pytorch_model.bin")
    (folder / "config.json").write_text((root / "vae" / "config.json").read_text())
    _assert_same(load_vae(folder)[1], base)


def test_converted_round_trip(pipeline, tmp_path):
    root, _, _ = pipeline
    module, params = load_unet(root / "unet")
    save_converted(tmp_path / "ours", "unet", module.config, params)
    module2, params2 = load_converted(tmp_path / "ours")
    assert module2.config == module.config
    _assert_same(params2, params)
    module3, params3 = load_unet(tmp_path / "ours", dtype="bfloat16")
    assert module3.config.dtype == "bfloat16"
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(params3))
    vae_module, vae_params = load_vae(root / "vae")
    save_converted(tmp_path / "dec", "decoder", vae_module.config, vae_params["decoder"])
    _assert_same(load_converted(tmp_path / "dec", kind="decoder")[1], vae_params["decoder"])
    with pytest.raises(CheckpointReadError, match="holds a .unet., expected vae"):
        load_vae(tmp_path / "ours")
    bad = dict(params)
    bad.pop("conv_in")
    save_converted(tmp_path / "bad", "unet", module.config, bad)
    with pytest.raises(CheckpointMismatchError, match="conv_in/kernel"):
        load_converted(tmp_path / "bad")


def test_mismatch_error_names_every_problem_and_the_file(pipeline, tmp_path):
    _, unet, _ = pipeline
    sd = {k: v.clone() for k, v in unet.state_dict().items()}
    del sd["conv_in.weight"]
    del sd["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
    sd["down_blocks.0.resnets.0.bogus.weight"] = torch.zeros(3)
    sd["conv_out.weight"] = torch.zeros(4, 32, 1, 1)
    folder = tmp_path / "broken"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file(sd, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **UNET}))
    with pytest.raises(CheckpointMismatchError) as info:
        load_unet(folder)
    msg = str(info.value)
    assert str(folder / "diffusion_pytorch_model.safetensors") in msg
    assert "2 missing" in msg and "conv_in.weight" in msg
    assert "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight" in msg
    assert "1 unexpected" in msg and "down_blocks.0.resnets.0.bogus.weight" in msg
    assert "conv_out.weight: (4, 32, 1, 1) vs (4, 32, 3, 3)" in msg


def test_unreadable_files_and_configs_get_clear_errors(pipeline, tmp_path):
    root, _, _ = pipeline
    data = (root / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match="truncated"):
        read_state_dict(tmp_path / "cut.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(CheckpointReadError, match="not a safetensors"):
        read_state_dict(tmp_path / "tiny.safetensors")
    (tmp_path / "junk.bin").write_bytes(b"this is not a pickle at all")
    with pytest.raises(CheckpointReadError, match="junk.bin"):
        read_state_dict(tmp_path / "junk.bin")
    (tmp_path / "x.onnx").write_text("")
    with pytest.raises(CheckpointReadError, match="unknown checkpoint type"):
        read_state_dict(tmp_path / "x.onnx")
    with pytest.raises(CheckpointReadError, match="no such file"):
        load_unet(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(CheckpointReadError, match="no weights file"):
        load_unet(empty)
    (empty / "diffusion_pytorch_model.safetensors").write_bytes(data)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(CheckpointReadError, match="invalid JSON"):
        load_unet(empty)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "diffusion_pytorch_model.safetensors").write_bytes(data)
    cfg = {"_class_name": "UNet2DConditionModel", **UNET, "class_embed_type": "timestep"}
    (odd / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedConfigError, match=r"odd/config.json.*class_embed_type"):
        load_unet(odd)
    (odd / "config.json").write_text(json.dumps({**cfg, "_class_name": "AutoencoderKL"}))
    with pytest.raises(UnsupportedConfigError, match="AutoencoderKL"):
        load_unet(odd)


def test_plain_numpy_pickle_and_unsafe_pickle_guard(tmp_path):
    arrays = {"a.weight": np.ones((2, 3), np.float32), "b": {"c.bias": np.zeros(2)}}
    with (tmp_path / "np.pkl").open("wb") as f:
        pickle.dump(arrays, f)
    got = read_state_dict(tmp_path / "np.pkl")
    assert sorted(got) == ["a.weight", "b.c.bias"]

    class Evil:
        def __reduce__(self):
            return (print, ("should not run",))

    with (tmp_path / "evil.pkl").open("wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointReadError, match="allow_unsafe_pickle"):
        read_state_dict(tmp_path / "evil.pkl")
