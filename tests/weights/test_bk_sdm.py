"""BK-SDM-v2-Small's block-removed student (AdcSR Table B.1 row 1) against diffusers + torch."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, abstract_params, count_params
from adcsr_jax.models.unet import UNetConfig
from adcsr_jax.weights.bk_sdm import bk_small_state_dict
from adcsr_jax.weights.networks import unet_template

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from adcsr_jax.testing import reference as ref  # noqa: E402
from adcsr_jax.testing import torch_adcsr as T  # noqa: E402
from adcsr_jax.weights.adcsr_ckpt import student_params_from_torch  # noqa: E402
from adcsr_jax.weights.prune import student_init_state_dict  # noqa: E402

# BK-SDM kd_train_text_to_image.py copy_weight_from_teacher, "bk_small": TO-student <- FROM-SD.
BK_CONNECT = {
    "up_blocks.0.resnets.1.": "up_blocks.0.resnets.2.",
    "up_blocks.1.resnets.1.": "up_blocks.1.resnets.2.",
    "up_blocks.1.attentions.1.": "up_blocks.1.attentions.2.",
    "up_blocks.2.resnets.1.": "up_blocks.2.resnets.2.",
    "up_blocks.2.attentions.1.": "up_blocks.2.attentions.2.",
    "up_blocks.3.resnets.1.": "up_blocks.3.resnets.2.",
    "up_blocks.3.attentions.1.": "up_blocks.3.attentions.2.",
}
BK_TINY = {**T.TINY_SD_UNET_CONFIG, "layers_per_block": 1, "mid_block_type": None}
TINY_BK_STUDENT = AdcSRConfig(
    block_out_channels=(32, 64, 128, 128),
    num_attention_heads=(2, 2, 4, 4),
    layers_per_block=1,
    unet_mid_block=False,
    decoder_block_out_channels=(32, 32, 64, 64),
)


def test_full_size_counts_against_table_b1():
    """Shapes only: BK-SDM-v2-Small's UNet (485.8M with time and cross-attention) and the AdcSR
    student built on it, 456.65M = 457M of Table B.1 (the channel-pruned student: 456.07M)."""
    bk = UNetConfig(layers_per_block=1, mid_block=False)
    assert count_params(unet_template(bk)) == 485_787_524
    student = AdcSRConfig(
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=1, unet_mid_block=False
    )
    p = abstract_params(student)
    assert count_params(p) == 456_651_523 and round(count_params(p) / 1e6) == 457
    assert count_params(p["unet"]) == 444_273_536
    assert "mid_block" not in p["unet"] and "resnets_1" not in p["unet"]["down_blocks_0"]
    assert sorted(p["unet"]["up_blocks_1"]) == ["attentions_0", "attentions_1", "resnets_0",
                                                "resnets_1", "upsamplers_0"]  # fmt: skip


def test_init_copies_exactly_the_kept_sd_blocks():
    sd = ref.state_dict_numpy(ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=3))
    got = bk_small_state_dict(sd)
    bk = ref.torch_unet(BK_TINY, seed=0)  # diffusers' BK layout: the keys must fit strictly
    bk.load_state_dict({k: torch.from_numpy(v) for k, v in got.items()}, strict=True)
    for key in bk.state_dict():
        src = next((key.replace(p, q, 1) for p, q in BK_CONNECT.items() if key.startswith(p)), key)
        np.testing.assert_array_equal(got[key], sd[src], err_msg=key)
    assert not any(k.startswith("mid_block.") for k in got)
    with pytest.raises(KeyError, match="layers_per_block=2"):
        bk_small_state_dict(got)


def test_student_matches_torch_block_removed_reference():
    """Flax student (BK blocks, AdcSR front) == diffusers BK UNet with AdcSR's front surgery."""
    sd_model = ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=5)
    bk = ref.torch_unet(BK_TINY, seed=0)
    bk_sd = bk_small_state_dict(ref.state_dict_numpy(sd_model))
    bk.load_state_dict({k: torch.from_numpy(v) for k, v in bk_sd.items()})
    half = T.torch_half_decoder(T.TINY_HALF_DECODER_CONFIG, seed=4)
    net, tail = T.build_torch_student(bk, half, ratio=1.0)
    lr = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want_f = ref.nhwc(net(ref.nchw(lr)))
        want_img = ref.nhwc(tail(net(ref.nchw(lr))))
    init = student_init_state_dict(bk_sd, ref.state_dict_numpy(half), ratio=1.0)
    params = student_params_from_torch(init, TINY_BK_STUDENT)
    module = AdcSR(TINY_BK_STUDENT)
    f = jax.jit(lambda p, x: module.apply({"params": p}, x, method=AdcSR.features))(params, lr)
    img = jax.jit(lambda p, x: module.apply({"params": p}, x, method=AdcSR.raw))(params, lr)
    np.testing.assert_allclose(np.asarray(f), want_f, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(img), want_img, atol=1e-4, rtol=0)
