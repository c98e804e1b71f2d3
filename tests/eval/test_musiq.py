"""MUSIQ: parity with pyiqa's PyTorch MUSIQ (seeded random weights, fixtures from
scripts/make_iqa_fixtures.py), checkpoint-layout checks, and the OSEDiff RealSR log when the real
KonIQ checkpoint is supplied via $ADCSR_MUSIQ_WEIGHTS."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from adcsr_jax.eval import MissingWeightError, get_metric, musiq
from adcsr_jax.models import musiq as musiq_net
from adcsr_jax.testing.realsr import osediff_outputs
from adcsr_jax.weights import CheckpointMismatchError
from adcsr_jax.weights.iqa_common import seeded_state_dict
from adcsr_jax.weights.iqa_musiq import musiq_params_from_torch

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    data = dict(np.load(FIXTURES / "musiq_tiny.npz"))
    cfg = musiq_net.MUSIQConfig(**json.loads(str(data["config"])))
    params = musiq_params_from_torch(seeded_state_dict(data), cfg, "musiq_tiny.npz")
    return data, cfg, params


def _nhwc(u8: np.ndarray) -> np.ndarray:
    return u8.transpose(0, 2, 3, 1).astype(np.float32) / 255.0


def test_hashed_positions_match_torch_nearest():
    # torch F.interpolate(arange(10), 16, 'nearest') -> floor(i * 10/16)
    assert musiq_net.hashed_positions(10, 1, 16).tolist() == [int(i * 10 / 16) for i in range(16)]
    grid = musiq_net.hashed_positions(10, 7, 5).reshape(7, 5)
    assert grid[:, 0].tolist() == [0, 10, 20, 40, 50, 70, 80]
    assert grid[0].tolist() == [0, 2, 4, 6, 8]


def test_layout_pads_and_masks():
    spatial, scale, mask = musiq_net.token_layout(96, 128, musiq_net.MUSIQConfig())
    # 224 scale: 168x224 -> 6x7 = 42 valid of 49; 384: 288x384 -> 9x12 = 108 of 144; original 3x4.
    assert len(mask) == 49 + 144 + 12
    assert mask[:49].sum() == 42 and mask[49:193].sum() == 108 and mask[193:].sum() == 12
    assert scale[:42].max() == 0 and set(scale[49:157]) == {1} and set(scale[193:]) == {2}


def test_scores_match_pyiqa(tiny):
    data, cfg, params = tiny
    metric = musiq.MUSIQ(params, cfg, batch_size=2)
    for key in ("a", "b"):
        got = metric(_nhwc(data[f"input_{key}"]))
        np.testing.assert_allclose(got, data[f"score_{key}"], atol=TOL, rtol=0)


def test_encoder_cls_matches_pyiqa(tiny):
    data, cfg, params = tiny
    x = jax.numpy.asarray(_nhwc(data["input_a"])) * 2 - 1
    spatial, scale, mask = musiq_net.token_layout(x.shape[1], x.shape[2], cfg)
    patches = musiq_net.multiscale_patches(x, cfg)
    _, state = musiq_net.MUSIQNet(cfg).apply(
        {"params": params}, patches, spatial, scale, mask, capture_intermediates=True
    )
    enc = state["intermediates"]["transformer_encoder"]["__call__"][0]
    np.testing.assert_allclose(np.asarray(enc[:, 0]), data["cls_a"], atol=TOL, rtol=0)


def test_full_size_checkpoint_layout_converts():
    shapes = json.loads((FIXTURES / "iqa_full_shapes.json").read_text())["musiq"]
    sd = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    params = musiq_params_from_torch(sd, musiq_net.MUSIQConfig(), "full")
    assert params["embedding"]["kernel"].shape == (16384, 384)
    del sd["transformer_encoder.transformer.encoderblock_13.mlp.fc2.bias"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(
        CheckpointMismatchError, match=r"(?s)encoderblock_13/mlp/fc2/bias.*unexpected.*extra"
    ):
        musiq_params_from_torch(sd, musiq_net.MUSIQConfig(), "full")


def test_missing_weights_message(monkeypatch, tmp_path):
    monkeypatch.delenv(musiq.ENV_VAR, raising=False)
    with pytest.raises(
        MissingWeightError, match="musiq_koniq_ckpt-e95806b9.pth.*ADCSR_MUSIQ_WEIGHTS"
    ):
        musiq.create(weights_path=str(tmp_path / "nope.pth"))


@pytest.mark.slow
def test_realsr_log_values(realsr, osediff_log):
    """Real KonIQ weights vs the per-image pyiqa log of OSEDiff's RealSR outputs (8 images)."""
    if not os.environ.get(musiq.ENV_VAR):
        pytest.skip(f"${musiq.ENV_VAR} not set (real MUSIQ KonIQ checkpoint)")
    metric = musiq.create()
    for name, img, logged in osediff_outputs(realsr, osediff_log[0], "musiq", 8):
        # 1e-3 of the score scale (~0-100): GPU (TF32 convs) vs CPU fp32 noise, as for LPIPS/DISTS.
        assert abs(metric(img[None])[0] - logged) < 0.1, name


def test_create_from_torch_file(tiny, tmp_path, monkeypatch):
    """The user-facing path: a torch .pth named by $ADCSR_MUSIQ_WEIGHTS -> create() -> scores."""
    torch = pytest.importorskip("torch")
    data, cfg, _ = tiny
    path = tmp_path / "musiq_tiny.pth"
    sd = seeded_state_dict(data)
    torch.save({f"module.{k}": torch.from_numpy(v) for k, v in sd.items()}, path)
    monkeypatch.setenv(musiq.ENV_VAR, str(path))
    metric = get_metric("musiq", **json.loads(str(data["config"])))  # registry -> create()
    assert (metric.name, metric.higher_is_better, metric.needs_reference) == ("musiq", True, False)
    np.testing.assert_allclose(metric(_nhwc(data["input_b"])), data["score_b"], atol=TOL, rtol=0)
