"""``adcsr convert sd``: diffusers pipeline folder -> our format, and a clear failure."""

from __future__ import annotations

import numpy as np
import pytest
from flax import traverse_util

from adcsr_jax.testing import reference as ref
from adcsr_jax.weights import load_converted, load_unet, load_vae

pytest.importorskip("torch")


def _main(argv):
    from adcsr_jax import cli

    return cli.main(["convert", "sd", *argv])


def test_convert_sd_round_trip(tmp_path, capsys):
    unet_cfg = {
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 16,
        "attention_head_dim": 2,
        "use_linear_projection": True,
        "norm_num_groups": 8,
    }
    vae_cfg = {"block_out_channels": [16, 32], "norm_num_groups": 8,
               "down_block_types": ["DownEncoderBlock2D"] * 2,
               "up_block_types": ["UpDecoderBlock2D"] * 2}  # fmt: skip
    ref.torch_unet(unet_cfg).save_pretrained(tmp_path / "sd" / "unet")
    ref.torch_vae(vae_cfg).save_pretrained(tmp_path / "sd" / "vae")
    assert _main([str(tmp_path / "sd"), str(tmp_path / "out")]) == 0
    assert "unet:" in capsys.readouterr().out
    for part, loader in (("unet", load_unet), ("vae", load_vae)):
        _, params = load_converted(tmp_path / "out" / part, kind=part)
        _, want = loader(tmp_path / "sd" / part)
        got, want = traverse_util.flatten_dict(params), traverse_util.flatten_dict(want)
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
    assert _main([str(tmp_path / "missing"), str(tmp_path / "out2")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
