"""Adapters exported under PEFT's names load into a PEFT-wrapped diffusers UNet and compute the same."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from adcsr_jax.models import UNet2D, UNetConfig
from adcsr_jax.models.discriminator import unet_lora_specs
from adcsr_jax.nn.lora import apply_with_lora, init_lora
from adcsr_jax.testing import reference as ref
from adcsr_jax.weights import CheckpointMismatchError, unet_params_from_torch
from adcsr_jax.weights.lora_peft import (
    load_peft_adapters,
    lora_from_peft,
    lora_to_peft,
    peft_adapter_config,
    save_peft_adapters,
)

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

TINY = ref.TINY_UNET_CONFIG
SPECS = unet_lora_specs(4)


def _lora_config(spec, params):
    cfg = peft_adapter_config(spec, params)
    return peft.LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"],
                           target_modules=cfg["target_modules"], init_lora_weights="gaussian")  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    config = UNetConfig.from_diffusers(TINY)
    params = unet_params_from_torch(ref.state_dict_numpy(ref.torch_unet(TINY, seed=4)), config)
    lora = init_lora(SPECS, params, jax.random.key(2))
    rng = np.random.default_rng(3)  # random B, so that the adapters change the output
    lora = jax.tree_util.tree_map_with_path(
        lambda p, x: 0.1 * rng.standard_normal(x.shape, np.float32) if p[-1].key == "lora_B" else x,
        lora,
    )
    x = rng.standard_normal((2, 8, 8, 4), np.float32)
    t = np.array([999.0, 10.0], np.float32)
    ctx = rng.standard_normal((2, 5, 24), np.float32)
    want = jax.jit(lambda p, lo: apply_with_lora(UNet2D(config), p, lo, SPECS, x, t, ctx))(
        params, lora
    )
    return params, lora, (x, t, ctx), np.asarray(want)


def _run(model, inputs):
    x, t, ctx = inputs
    with torch.no_grad():
        out = model(ref.nchw(x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(ctx))
    return ref.nhwc(out[0] if isinstance(out, tuple) else out.sample)


def test_state_dict_loads_into_diffusers_add_adapter(setup) -> None:
    params, lora, inputs, want = setup
    unet = ref.torch_unet(TINY, seed=4)
    for spec in SPECS:
        unet.add_adapter(_lora_config(spec, params), adapter_name=spec.name)
    unet.set_adapters([s.name for s in SPECS])
    sd = {k: torch.from_numpy(v) for k, v in lora_to_peft(lora, prefix="").items()}
    missing, unexpected = unet.load_state_dict(sd, strict=False)
    assert unexpected == [] and not [k for k in missing if ".lora_" in k]
    np.testing.assert_allclose(_run(unet, inputs), want, atol=1e-4, rtol=0)
    back = lora_from_peft(unet.state_dict(), SPECS, params)
    jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, lora))


def test_save_pretrained_folders_load_with_peft_model(setup, tmp_path) -> None:
    params, lora, inputs, want = setup
    folders = save_peft_adapters(tmp_path, lora, SPECS, params)
    model = peft.PeftModel.from_pretrained(
        ref.torch_unet(TINY, seed=4), str(folders[0]), adapter_name=SPECS[0].name
    )
    for spec, folder in zip(SPECS[1:], folders[1:]):
        model.load_adapter(str(folder), adapter_name=spec.name)
    model.base_model.set_adapter([s.name for s in SPECS])
    np.testing.assert_allclose(_run(model, inputs), want, atol=1e-4, rtol=0)
    back = lora_from_peft(model.state_dict(), SPECS, params)  # base_model.model.<module>...
    jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, lora))
    again = load_peft_adapters(tmp_path, SPECS, params)
    jax.tree.map(np.testing.assert_array_equal, again, jax.tree.map(np.asarray, lora))


def test_mismatches_name_the_keys(setup) -> None:
    params, lora, _, _ = setup
    sd = lora_to_peft(lora)
    gone = "base_model.model.conv_in.lora_A.default_encoder.weight"
    del sd[gone]
    sd["base_model.model.conv_in.lora_A.default_decoder.weight"] = np.zeros((4, 4, 3, 3))
    key = "base_model.model.mid_block.resnets.0.conv1.lora_B.default_others.weight"
    sd[key] = np.zeros((64, 3, 1, 1), np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        lora_from_peft(sd, SPECS, params)
    msg = str(e.value)
    assert "conv_in.lora_A.default_encoder.weight" in msg
    assert "conv_in.lora_A.default_decoder.weight" in msg
    assert f"{key}: (64, 3, 1, 1) vs (64, 4, 1, 1)" in msg
