"""The discriminator against ``unet_D`` built the way AdcSR ``train.py`` builds it (tiny, fp32)."""

from __future__ import annotations

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.models import UNetConfig
from adcsr_jax.models.discriminator import (
    ADAPTERS,
    DiscriminatorConfig,
    count_trainable,
    discriminator_logical_axes,
    discriminator_logits,
    init_discriminator,
)
from adcsr_jax.testing import reference as ref
from adcsr_jax.weights import unet_params_from_torch
from adcsr_jax.weights.lora_peft import lora_from_peft, peft_state_dict

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

TINY = ref.TINY_UNET_CONFIG
FEATURES = 16  # tiling factor 16 / 4 = 4 (64 at full size)
# AdcSR utils.add_lora_to_unet: substrings of parameter names that get an adapter.
GREP = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
        "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj"]  # fmt: skip


def adcsr_lora_lists(unet) -> dict[str, list[str]]:
    """The three module lists of AdcSR's rule: location decides the adapter, first match wins."""
    lists = {a: [] for a in ADAPTERS}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name or not any(g in name for g in GREP):
            continue
        module = name.replace(".weight", "")
        if "down_blocks" in name or "conv_in" in name:
            lists["default_encoder"].append(module)
        elif "up_blocks" in name or "conv_out" in name:
            lists["default_decoder"].append(module)
        else:
            lists["default_others"].append(module)
    return lists


def torch_discriminator(sd_unet, features: int):
    """``unet_D`` as in AdcSR ``train.py``: new conv_in by tiling, three gaussian r=4 adapters."""
    unet_d = copy.deepcopy(sd_unet)
    factor = features // sd_unet.conv_in.in_channels
    new = torch.nn.Conv2d(features, sd_unet.conv_in.out_channels, 3, padding=1)
    new.weight.data = unet_d.conv_in.weight.data.repeat(1, factor, 1, 1) / factor
    new.bias.data = unet_d.conv_in.bias.data
    unet_d.conv_in = new
    for adapter, modules in adcsr_lora_lists(unet_d).items():
        cfg = peft.LoraConfig(r=4, init_lora_weights="gaussian", target_modules=modules)
        unet_d.add_adapter(cfg, adapter_name=adapter)
    unet_d.set_adapters(list(ADAPTERS))
    unet_d.requires_grad_(False)
    for name, p in unet_d.named_parameters():
        if "lora" in name or "conv_in" in name:
            p.requires_grad = True
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # B = 0 at init; random B so that every adapter changes the output
        for name, p in unet_d.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return unet_d


@pytest.fixture(scope="module")
def setup():
    sd = ref.torch_unet(TINY, seed=3)
    unet_d = torch_discriminator(sd, FEATURES)
    config = DiscriminatorConfig(unet=UNetConfig.from_diffusers(TINY), feature_channels=FEATURES)
    sd_params = unet_params_from_torch(ref.state_dict_numpy(sd), config.unet)
    state = init_discriminator(config, sd_params, jax.random.key(0))
    return sd, unet_d, config, sd_params, state


def test_init_tiles_conv_in_and_trainable_names_match_requires_grad(setup) -> None:
    _, unet_d, config, _, state = setup
    w = unet_d.conv_in.base_layer.weight.detach().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(state["trainable"]["unet"]["conv_in"]["kernel"], w)
    np.testing.assert_array_equal(
        state["trainable"]["unet"]["conv_in"]["bias"], unet_d.conv_in.base_layer.bias.detach()
    )
    want = {n for n, p in unet_d.named_parameters() if p.requires_grad}
    names = peft_state_dict(state["trainable"]["unet"], state["trainable"]["lora"])
    assert set(names) == want
    for key, value in names.items():
        assert value.shape == tuple(dict(unet_d.named_parameters())[key].shape), key
    frozen = peft_state_dict(state["frozen"]["unet"], state["trainable"]["lora"])
    frozen = {k for k in frozen if ".lora_" not in k}
    assert frozen == {n for n, p in unet_d.named_parameters() if not p.requires_grad}
    assert count_trainable(config) == sum(p.numel() for p in unet_d.parameters() if p.requires_grad)
    # PEFT gaussian init: A ~ N(0, 1/r^2), B = 0
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state["trainable"]["lora"])
                        if x.shape[-1] == 4 and x.shape[0] != 1])  # fmt: skip
    assert abs(a.std() - 0.25) < 0.02
    axes = discriminator_logical_axes(config)
    assert jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) \
        == jax.tree.structure(state)  # fmt: skip


def test_logits_and_gradients_equal_adcsr_torch(setup) -> None:
    _, unet_d, config, _, state = setup
    lora = lora_from_peft(unet_d.state_dict(), config.specs, state["frozen"]["unet"] | {
        "conv_in": state["trainable"]["unet"]["conv_in"]})  # fmt: skip
    trainable = {"unet": state["trainable"]["unet"], "lora": lora}
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((2, 8, 6, FEATURES), np.float32)
    emb = rng.standard_normal((2, 7, 24), np.float32)
    weight = rng.standard_normal((2, 8, 6, 4), np.float32)

    out = unet_d(ref.nchw(feats).requires_grad_(True), torch.tensor([999, 999]),
                 encoder_hidden_states=torch.from_numpy(emb), return_dict=False)[0]  # fmt: skip
    (out * ref.nchw(weight)).sum().backward()

    def loss(tr, f):
        logits = discriminator_logits(config, tr, state["frozen"], f, jnp.asarray(emb))
        return (logits * weight).sum(), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(trainable, feats)
    np.testing.assert_allclose(logits, ref.nhwc(out), atol=1e-4, rtol=0)
    got = peft_state_dict(grads["unet"], grads["lora"])
    params = dict(unet_d.named_parameters())
    assert set(got) == {n for n, p in params.items() if p.requires_grad}
    for key, g in got.items():
        want = params[key].grad.numpy()
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(g, want, atol=1e-4 * scale, rtol=0, err_msg=key)


def test_modes_and_bad_inputs(setup) -> None:
    _, _, config, sd_params, _ = setup
    lora_only = dataclasses.replace(config, conv_in="lora")
    st = init_discriminator(lora_only, sd_params, jax.random.key(1))
    assert st["trainable"]["unet"] == {} and "conv_in" in st["frozen"]["unet"]
    conv_in = st["frozen"]["unet"]["conv_in"]
    assert count_trainable(config) - count_trainable(lora_only) == conv_in["kernel"].size + 32
    full = dataclasses.replace(config, finetune="full", rank=8)
    st = init_discriminator(full, sd_params, jax.random.key(1))
    assert st["trainable"]["lora"] == {} and st["frozen"]["unet"] == {}
    total = sum(np.size(x) for x in jax.tree.leaves(sd_params)) + (FEATURES - 4) * 9 * 32
    assert count_trainable(full) == total
    assert count_trainable(dataclasses.replace(config, rank=8)) > count_trainable(config)
    with pytest.raises(ValueError, match="multiple"):
        DiscriminatorConfig(unet=config.unet, feature_channels=18)
    bad = {**sd_params, "conv_in": {"kernel": np.zeros((3, 3, 5, 32)), "bias": np.zeros(32)}}
    with pytest.raises(ValueError, match="conv_in/kernel"):
        init_discriminator(config, bad, jax.random.key(0))
    st = init_discriminator(config, sd_params, jax.random.key(0))
    with pytest.raises(ValueError, match="16 channels"):
        discriminator_logits(config, st["trainable"], st["frozen"], jnp.zeros((1, 8, 8, 4)),
                             jnp.zeros((1, 7, 24)))  # fmt: skip


@pytest.mark.slow
def test_full_size_trainable_count() -> None:
    assert count_trainable(DiscriminatorConfig()) == 4_802_384


def test_save_and_load_in_adcsr_torch_names(setup, tmp_path) -> None:
    from safetensors.torch import load_file

    from adcsr_jax.weights import CheckpointMismatchError
    from adcsr_jax.weights.discriminator import (
        load_discriminator,
        read_discriminator_config,
        save_discriminator,
    )
    from adcsr_jax.weights.io import read_safetensors, write_safetensors

    sd, unet_d, config, _, state = setup
    path = save_discriminator(tmp_path / "d.safetensors", config, state["trainable"])
    fresh = torch_discriminator(sd, FEATURES)
    missing, unexpected = fresh.load_state_dict(load_file(str(path)), strict=False)
    assert unexpected == [] and not [k for k in missing if "lora" in k or "conv_in" in k]
    for name, p in fresh.named_parameters():
        if p.requires_grad:
            np.testing.assert_array_equal(
                p.detach().numpy(), peft_state_dict(state["trainable"]["unet"],
                                                    state["trainable"]["lora"])[name])  # fmt: skip
    assert read_discriminator_config(path) == config
    back = load_discriminator(path, config)
    jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, state["trainable"]))
    tensors, _ = read_safetensors(path)
    del tensors["conv_in.base_layer.bias"]
    write_safetensors(tmp_path / "bad.safetensors", tensors)
    with pytest.raises(CheckpointMismatchError, match="conv_in.bias"):
        load_discriminator(tmp_path / "bad.safetensors", config)


def test_build_from_a_diffusers_folder(setup, tmp_path) -> None:
    from adcsr_jax.weights.discriminator import build_discriminator

    sd, _, config, _, state = setup
    sd.save_pretrained(tmp_path / "unet")
    built = build_discriminator(config, tmp_path / "unet", jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, built, state)
    other = dataclasses.replace(config, unet=dataclasses.replace(config.unet, norm_eps=1e-6))
    with pytest.raises(ValueError, match="norm_eps"):
        build_discriminator(other, tmp_path / "unet", jax.random.key(0))


@pytest.mark.slow  # two UNet compiles (about 2 min on 2 busy cores); the stage-2 step covers it
def test_sharded_logits_equal_unsharded(setup) -> None:
    """State sharded FSDP-style by its logical axes, batch over (data, fsdp): same logits."""
    from adcsr_jax.sharding import DEFAULT_RULES, batch_sharding, logical_to_sharding, make_mesh

    _, _, config, _, state = setup
    mesh = make_mesh(data=4, fsdp=2)
    shardings = logical_to_sharding(discriminator_logical_axes(config), state, mesh, DEFAULT_RULES)
    placed = jax.device_put(state, shardings)
    assert placed["trainable"]["lora"]["default_others"]["mid_block"]["resnets_0"]["conv1"][
        "lora_B"].sharding.spec == jax.sharding.PartitionSpec(None, None, None, "fsdp")  # fmt: skip
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((8, 4, 4, FEATURES), np.float32)
    emb = rng.standard_normal((1, 7, 24), np.float32)
    fn = jax.jit(lambda tr, fr, f: discriminator_logits(config, tr, fr, f, jnp.asarray(emb)))
    want = fn(state["trainable"], state["frozen"], feats)
    got = fn(placed["trainable"], placed["frozen"], jax.device_put(feats, batch_sharding(mesh, 4)))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
