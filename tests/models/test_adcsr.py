"""The AdcSR student against AdcSR's own recipe built in PyTorch from diffusers modules.

The torch reference prunes a tiny SD-style UNet the way AdcSR's ``Net`` does (tiled conv_in and
conv_out, no time embedding / cross-attention, every layer sliced to 75%), runs AdcSR's
simplified forwards with the global skip stack, and adds a half-decoder mid block and tail.
The Flax student gets its params from our pruning + name mapping; max abs error <= 1e-4 (fp32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.models.adcsr import (
    AdcSR,
    AdcSRConfig,
    abstract_params,
    colour_fix,
    count_params,
    finish,
    init_student,
    merge_params,
    split_params,
)

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from adcsr_jax.testing import reference as ref  # noqa: E402
from adcsr_jax.testing import torch_adcsr as T  # noqa: E402
from adcsr_jax.weights.adcsr_ckpt import student_params_from_torch  # noqa: E402
from adcsr_jax.weights.prune import student_init_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pair():
    sd_unet = ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=1)
    half = T.torch_half_decoder(T.TINY_HALF_DECODER_CONFIG, seed=2)
    net, tail = T.build_torch_student(sd_unet, half)
    init = student_init_state_dict(ref.state_dict_numpy(sd_unet), ref.state_dict_numpy(half))
    config = AdcSRConfig.tiny()
    params = student_params_from_torch(init, config, source="tiny SD + half decoder")
    return net, tail, config, params


X = np.random.default_rng(0).uniform(-1, 1, (2, 32, 48, 3)).astype(np.float32)


def _all_outputs(config: AdcSRConfig, params, x: np.ndarray):
    """features, raw, finished and ``__call__`` outputs from one compiled function."""
    module = AdcSR(config)

    def run(p, lr):
        feats = module.apply({"params": p}, lr, method=AdcSR.features)
        raw = module.apply({"params": p}, feats, method=AdcSR.decode)
        return feats, raw, finish(raw, lr), module.apply({"params": p}, lr)

    return [np.asarray(a) for a in jax.jit(run)(params, jnp.asarray(x))]


@pytest.fixture(scope="module")
def fp32_outputs(tiny_pair):
    _, _, config, params = tiny_pair
    return _all_outputs(config, params, X)


def test_student_matches_torch_reference(tiny_pair, fp32_outputs) -> None:
    net, tail, config, _ = tiny_pair
    with torch.no_grad():
        feats = net(ref.nchw(X))
        raw = tail(feats)
        final = T.torch_student_infer(net, tail, ref.nchw(X))
    got_feats, got_raw, got_final, direct = fp32_outputs
    assert got_feats.shape == (2, 16, 24, config.feature_channels)
    assert got_final.shape == (2, 128, 192, 3)
    np.testing.assert_allclose(got_feats, ref.nhwc(feats), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_raw, ref.nhwc(raw), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_final, ref.nhwc(final), atol=1e-4, rtol=0)
    np.testing.assert_allclose(direct, got_final, atol=1e-6)  # __call__ is the same path


def test_cpu_fast_paths_give_the_same_outputs(tiny_pair, fp32_outputs) -> None:
    # 16x24 latent = 384 tokens: 3 chunks of 128 in the UNet's first level and the mid block;
    # convs on maps of <= 96 pixels (the 8x12, 4x6 and 2x3 levels) run as im2col matmuls.
    _, _, config, params = tiny_pair
    fast = config.replace(attention_query_chunk=128, conv_matmul_max_pixels=96)
    chunked = _all_outputs(fast, params, X)
    for got, want in zip(chunked, fp32_outputs):  # summation order only: well inside 1e-4
        np.testing.assert_allclose(got, want, atol=5e-5, rtol=0)


def test_colour_fix_and_finish_follow_adcsr() -> None:
    rng = np.random.default_rng(1)
    sr = rng.uniform(-2, 2, (1, 16, 16, 3)).astype(np.float32)
    lr = rng.uniform(-1, 1, (1, 4, 4, 3)).astype(np.float32)
    fixed = np.asarray(colour_fix(jnp.asarray(sr), jnp.asarray(lr)))
    np.testing.assert_allclose(fixed.mean((1, 2)), lr.mean((1, 2)), atol=1e-5)
    np.testing.assert_allclose(fixed.std((1, 2), ddof=1), lr.std((1, 2), ddof=1), atol=1e-5)
    out = np.asarray(finish(jnp.asarray(sr), jnp.asarray(lr), fix_colour=False))
    np.testing.assert_allclose(out, np.clip(sr / 2 + 0.5, 0, 1))


def test_bad_input_sizes_are_rejected() -> None:
    module, params = init_student(AdcSRConfig.tiny())
    with pytest.raises(ValueError, match="divisible by 16"):
        module.apply({"params": params}, jnp.zeros((1, 40, 32, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        module.apply({"params": params}, jnp.zeros((1, 32, 32)))


def test_param_layout_and_split() -> None:
    config = AdcSRConfig.tiny()
    params = abstract_params(config)
    assert sorted(params) == ["decoder", "mid_block", "unet"]
    assert sorted(params["decoder"]) == [
        "conv_norm_out", "conv_out", "up_blocks_0", "up_blocks_1", "up_blocks_2", "up_blocks_3",
    ]  # fmt: skip
    assert "conv_in" not in params["decoder"] and "mid_block" not in params["decoder"]
    assert params["unet"]["conv_in"]["kernel"].shape == (3, 3, 12, 24)
    assert params["unet"]["conv_out"]["kernel"].shape == (3, 3, 24, 64)
    assert "time_embedding" not in params["unet"]
    trainable, frozen = split_params(params)
    assert sorted(trainable) == ["mid_block", "unet"] and sorted(frozen) == ["decoder"]
    assert count_params(merge_params(trainable, frozen)) == count_params(params)
    with pytest.raises(KeyError, match="decoder"):
        split_params({"unet": {}, "mid_block": {}})


def test_config_round_trip() -> None:
    for config in (AdcSRConfig.full(), AdcSRConfig.tiny("bfloat16")):
        assert AdcSRConfig.from_dict(config.to_dict()) == config
    assert AdcSRConfig.full().unet_config().block_out_channels == (240, 480, 960, 960)


@pytest.mark.slow  # one more compile (bf16); the benchmark checks bf16 at full size
def test_bfloat16_compute_is_close_to_fp32(tiny_pair, fp32_outputs) -> None:
    _, _, config, params = tiny_pair
    bf16 = jax.jit(AdcSR(config.replace(dtype="bfloat16")).apply)({"params": params}, X)
    assert bf16.dtype == jnp.float32
    err = np.asarray(bf16) - fp32_outputs[3]
    assert -10 * np.log10(np.mean(err**2)) > 30  # PSNR in dB (about 36 for this random net)


@pytest.mark.slow
def test_full_size_parameter_count() -> None:
    params = abstract_params(AdcSRConfig.full())
    assert count_params(params["unet"]) == 443_695_696
    assert count_params(params["mid_block"]) == 2_626_048
    assert count_params(params["decoder"]) == 9_751_939
    assert count_params(params) == 456_073_683
    heads = params["unet"]["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["attn1"]
    assert heads["to_q"]["kernel"].shape == (240, 240)  # 5 heads x 48
