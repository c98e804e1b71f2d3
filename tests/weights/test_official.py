"""Reading the released checkpoints, from files these tests write in the official layouts.

* AdcSR ``net_params_200.pkl``: ``torch.save`` of the DDP state dict of AdcSR's ``Net`` (built
  here from diffusers modules, so the duplicate ``module.body.1.body.K.*`` keys arise naturally).
* ``halfDecoder.ckpt``: a Lightning-style dict whose ``state_dict`` holds ``decoder.*`` entries
  among other ones.
* OSEDiff's ``osediff.pkl`` (PEFT LoRA names, three UNet adapters + a VAE encoder adapter) and
  AdcSR's merged ``{"vae", "unet"}`` file are in ``test_osediff_checkpoints`` below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flax import traverse_util

from adcsr_jax import cli
from adcsr_jax.models.adcsr import AdcSRConfig

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from adcsr_jax.testing import reference as ref  # noqa: E402
from adcsr_jax.testing import torch_adcsr as T  # noqa: E402
from adcsr_jax.weights import CheckpointMismatchError, CheckpointReadError, params_to_torch  # noqa: E402
from adcsr_jax.weights.adcsr_ckpt import (  # noqa: E402
    config_from_state_dict,
    convert_official,
    load_student,
    read_half_decoder,
    read_net_params,
)


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    """(folder, torch Net, torch half decoder) with the two released files written in it."""
    folder = tmp_path_factory.mktemp("adcsr_release")
    sd_unet = ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=5)
    half = T.torch_half_decoder(T.TINY_HALF_DECODER_CONFIG, seed=6)
    net, _ = T.build_torch_student(sd_unet, half)
    with torch.no_grad():  # the trained mid block differs from the half decoder's
        for p in net.body[2].parameters():
            p.add_(0.01)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    assert any(k.startswith("module.body.1.body.4.") for k in state)  # the duplicates
    torch.save(state, folder / "net_params_200.pkl")
    ckpt = {
        "epoch": 7,
        "global_step": 1234,
        "state_dict": {
            **{f"decoder.{k}": v for k, v in half.state_dict().items()},
            "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
            "loss.logvar": torch.zeros(()),
        },
    }
    torch.save(ckpt, folder / "halfDecoder.ckpt")
    return folder, net, half


def _expected_torch_names(net, half) -> dict[str, np.ndarray]:
    out = {}
    for k, v in net.state_dict().items():
        if k.startswith("body.1.") and not k.startswith("body.1.body."):
            out["unet." + k[len("body.1.") :]] = v.numpy()
        elif k.startswith("body.2."):
            out["mid_block." + k[len("body.2.") :]] = v.numpy()
    for k, v in half.state_dict().items():
        if k.startswith(("up_blocks.", "conv_norm_out.", "conv_out.")):
            out["decoder." + k] = v.numpy()
    return out


def test_convert_official_files(official_files) -> None:
    folder, net, half = official_files
    config, params = convert_official(folder / "net_params_200.pkl", folder / "halfDecoder.ckpt")
    assert config == AdcSRConfig.tiny()
    got = params_to_torch(params)
    want = _expected_torch_names(net, half)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_cli_convert_then_load(official_files, tmp_path: Path) -> None:
    folder, net, half = official_files
    out = tmp_path / "converted"
    code = cli.main(
        ["convert", "adcsr", "--net", str(folder / "net_params_200.pkl"),
         "--half-decoder", str(folder / "halfDecoder.ckpt"), "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    module, params, config = load_student(out, dtype="bfloat16")
    assert config.dtype == "bfloat16" and module.config == config
    flat = traverse_util.flatten_dict(params)
    assert all(v.dtype == np.float32 for v in flat.values())
    got = params_to_torch(params)
    for key, value in _expected_torch_names(net, half).items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_cli_reports_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "net.pkl").write_bytes(b"garbage")
    code = cli.main(
        ["convert", "adcsr", "--net", str(tmp_path / "net.pkl"), "--half-decoder",
         str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 2
    assert "--half-decoder" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "half.ckpt").write_bytes(b"garbage")
    code = cli.main(
        ["convert", "adcsr", "--net", str(tmp_path / "net.pkl"), "--half-decoder",
         str(tmp_path / "half.ckpt"), "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 2
    assert "net.pkl" in capsys.readouterr().err


def test_duplicate_that_disagrees_is_an_error(official_files, tmp_path: Path) -> None:
    folder, _, _ = official_files
    state = torch.load(folder / "net_params_200.pkl")
    key = next(k for k in state if k.startswith("module.body.1.body.9."))
    state[key] = state[key] + 1
    torch.save(state, tmp_path / "net.pkl")
    with pytest.raises(CheckpointMismatchError, match=r"body\.1\.body\.9"):
        read_net_params(tmp_path / "net.pkl")


def test_missing_and_unexpected_keys_are_named(official_files, tmp_path: Path) -> None:
    folder, _, _ = official_files
    state = torch.load(folder / "net_params_200.pkl")
    del state["module.body.1.conv_in.weight"]
    state["module.body.3.extra"] = torch.zeros(2)
    torch.save(state, tmp_path / "net.pkl")
    with pytest.raises(CheckpointMismatchError) as err:
        convert_official(tmp_path / "net.pkl", folder / "halfDecoder.ckpt")
    assert "body.3.extra" in str(err.value)
    state = torch.load(folder / "net_params_200.pkl")
    del state["module.body.1.conv_in.weight"]
    torch.save(state, tmp_path / "net2.pkl")
    unet, mid = read_net_params(tmp_path / "net2.pkl")
    assert "conv_in.weight" not in unet and mid
    with pytest.raises(CheckpointMismatchError, match="unet.conv_in.weight"):
        convert_official(tmp_path / "net2.pkl", folder / "halfDecoder.ckpt")


def test_half_decoder_without_decoder_entries(tmp_path: Path) -> None:
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}}, tmp_path / "h.ckpt")
    with pytest.raises(CheckpointReadError, match="decoder"):
        read_half_decoder(tmp_path / "h.ckpt")


def test_released_widths_give_the_full_config() -> None:
    sd = {f"unet.down_blocks.{i}.resnets.0.conv1.weight": np.zeros((w, 1, 1, 1))
          for i, w in enumerate((240, 480, 960, 960))}  # fmt: skip
    sd.update({f"decoder.up_blocks.{i}.resnets.0.conv1.weight": np.zeros((w, 1, 1, 1))
               for i, w in enumerate((256, 256, 128, 64))})  # fmt: skip
    assert config_from_state_dict(sd) == AdcSRConfig.full()
