"""Pruning SD 2.1-base into the student's initial weights, against the same slicing in torch."""

from __future__ import annotations

import numpy as np
import pytest

from adcsr_jax.models.adcsr import AdcSRConfig
from adcsr_jax.weights.prune import (
    adcsr_groups,
    prune_unet_state_dict,
    student_config,
    student_init_state_dict,
)

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from adcsr_jax.testing import reference as ref  # noqa: E402
from adcsr_jax.testing import torch_adcsr as T  # noqa: E402
from adcsr_jax.weights.adcsr_ckpt import student_params_from_torch  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sd():
    return ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=3)


@pytest.mark.parametrize("ratio", [0.75, 0.5])
def test_prune_equals_torch_surgery(tiny_sd, ratio: float) -> None:
    features = 64
    pruned_torch = T.prune_torch_unet(tiny_sd, ratio, features)
    want = {k: v for k, v in ref.state_dict_numpy(pruned_torch).items()}
    got = prune_unet_state_dict(ref.state_dict_numpy(tiny_sd), ratio, 12, features)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert got["conv_in.weight"].shape[1] == 12 and got["conv_out.weight"].shape[0] == features
    assert not any("attn2" in k or "time_emb" in k for k in got)
    # The pruned tensors fit the Flax student of the matching config.
    half = T.torch_half_decoder(T.TINY_HALF_DECODER_CONFIG, seed=4)
    init = student_init_state_dict(ref.state_dict_numpy(tiny_sd), ref.state_dict_numpy(half), ratio)
    config = student_config(
        (32, 64, 128, 128), (2, 2, 4, 4), ratio, decoder_block_out_channels=(32, 32, 64, 64)
    )
    params = student_params_from_torch(init, config)
    assert params["unet"]["conv_in"]["kernel"].shape == (3, 3, 12, int(32 * ratio))
    if ratio == 0.75:
        assert config == AdcSRConfig.tiny()


def test_sd21_shapes_follow_spec() -> None:
    """Shapes only (no 866M-param allocation): the released student's layer widths (AdcSR ``net_params_200.pkl``)."""
    shapes = {
        "conv_in.weight": (320, 4, 3, 3),
        "conv_in.bias": (320,),
        "conv_out.weight": (4, 320, 3, 3),
        "conv_out.bias": (4,),
        "up_blocks.0.resnets.0.conv1.weight": (1280, 2560, 3, 3),
        "up_blocks.2.resnets.2.norm1.weight": (960,),
        "up_blocks.3.resnets.0.conv_shortcut.weight": (320, 960, 1, 1),
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "down_blocks.0.attentions.0.transformer_blocks.0.norm2.weight": (320,),
        "down_blocks.0.resnets.0.time_emb_proj.weight": (320, 1280),
        "time_embedding.linear_1.weight": (1280, 320),
    }
    sd = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    sd["conv_out.bias"] = np.arange(4, dtype=np.float32)
    got = prune_unet_state_dict(sd)
    assert got["conv_in.weight"].shape == (240, 12, 3, 3)
    assert got["conv_out.weight"].shape == (256, 240, 3, 3)
    np.testing.assert_array_equal(got["conv_out.bias"], np.arange(256) % 4)
    assert got["up_blocks.0.resnets.0.conv1.weight"].shape == (960, 1920, 3, 3)
    assert got["up_blocks.3.resnets.0.conv_shortcut.weight"].shape == (240, 720, 1, 1)
    ff = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"
    assert got[ff].shape == (1920, 240)
    assert sorted(got) == sorted(k for k in shapes if "attn2" not in k and "norm2" not in k
                                 and "time_emb" not in k)  # fmt: skip
    assert adcsr_groups(240) == 24 and adcsr_groups(720) == 24 and adcsr_groups(1440) == 32


def test_conv_in_is_tiled_before_slicing() -> None:
    w = np.arange(8 * 4 * 9, dtype=np.float32).reshape(8, 4, 3, 3)
    sd = {"conv_in.weight": w, "conv_in.bias": np.zeros(8, np.float32),
          "conv_out.weight": np.zeros((4, 8, 3, 3), np.float32),
          "conv_out.bias": np.zeros(4, np.float32)}  # fmt: skip
    got = prune_unet_state_dict(sd, 0.75, 12, 6)["conv_in.weight"]
    np.testing.assert_array_equal(got, w[:6][:, np.arange(12) % 4])


def test_group_rule_disagreement_is_an_error() -> None:
    sd = {"conv_in.weight": np.zeros((48, 4, 3, 3), np.float32),
          "conv_in.bias": np.zeros(48, np.float32),
          "conv_out.weight": np.zeros((4, 48, 3, 3), np.float32),
          "conv_out.bias": np.zeros(4, np.float32),
          "down_blocks.0.resnets.0.norm1.weight": np.ones(48, np.float32)}  # fmt: skip
    # 48 * 0.75 = 36: AdcSR gives 12 groups, group_count gives 4.
    with pytest.raises(ValueError, match="36"):
        prune_unet_state_dict(sd, 0.75, 12, 8)
    with pytest.raises(KeyError, match="conv_out"):
        prune_unet_state_dict({"conv_in.weight": np.zeros((4, 4, 3, 3))})
