"""MANIQA: parity with pyiqa's PyTorch MANIQA (tiny timm ViT + TAB/Swin head with seeded random
weights; fixtures from scripts/make_iqa_fixtures.py), crop plan, checkpoint-layout checks, and the
OSEDiff RealSR log when the real PIPAL checkpoint is supplied via $ADCSR_MANIQA_WEIGHTS."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.eval import MissingWeightError, get_metric, maniqa
from adcsr_jax.models import maniqa as maniqa_net
from adcsr_jax.testing.realsr import osediff_outputs
from adcsr_jax.weights import CheckpointMismatchError
from adcsr_jax.weights.iqa_common import seeded_state_dict
from adcsr_jax.weights.iqa_maniqa import maniqa_params_from_torch

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-4


def tiny_config(data: dict) -> maniqa_net.MANIQAConfig:
    cfg = json.loads(str(data["config"]))
    vit = json.loads(str(data["vit_config"]))
    return maniqa_net.MANIQAConfig(
        embed_dim=cfg["embed_dim"],
        vit_depth=vit["depth"],
        vit_heads=vit["num_heads"],
        vit_mlp=int(vit["embed_dim"] * vit["mlp_ratio"]),
        depths=tuple(cfg["depths"]),
        window_size=cfg["window_size"],
        dim_mlp=cfg["dim_mlp"],
        num_heads=tuple(cfg["num_heads"]),
        num_tab=cfg["num_tab"],
        scale=cfg["scale"],
    )


@pytest.fixture(scope="module")
def tiny():
    data = dict(np.load(FIXTURES / "maniqa_tiny.npz"))
    cfg = tiny_config(data)
    params = maniqa_params_from_torch(seeded_state_dict(data), cfg, "maniqa_tiny.npz")
    return data, cfg, params


def _nhwc(u8: np.ndarray) -> np.ndarray:
    return u8.transpose(0, 2, 3, 1).astype(np.float32) / 255.0


def test_crop_plan_matches_pyiqa_uniform_crop():
    cfg = maniqa_net.MANIQAConfig()
    factor, h, w, offsets = maniqa_net.crop_plan(512, 512, cfg)
    assert factor is None and (h, w) == (512, 512)
    assert len(offsets) == 20 and offsets[:6] == [
        (0, 0),
        (0, 72),
        (0, 144),
        (0, 216),
        (0, 288),
        (72, 0),
    ]
    assert offsets[-1] == (216, 288)
    factor, h, w, _ = maniqa_net.crop_plan(200, 232, cfg)
    assert factor == pytest.approx(225 / 200) and (h, w) == (225, 261)
    assert (
        maniqa_net.crop_plan(224, 300, cfg)[0] is not None
    )  # pyiqa upsamples when min side <= 224


def test_vit_features_match_timm(tiny):
    data, cfg, params = tiny
    crop = (_nhwc(data["input_b"])[:, :224, :224] - 0.5) / 0.5
    feats = maniqa_net.ViTFeatures(cfg).apply({"params": params["vit"]}, jnp.asarray(crop))
    np.testing.assert_allclose(np.asarray(feats[0]), data["vit_feature_b0"], atol=TOL, rtol=0)


def test_scores_match_pyiqa(tiny):
    data, cfg, params = tiny
    metric = maniqa.MANIQA(params, cfg, batch_size=2, crop_chunk=8)  # chunks span both images
    for key in ("a", "b"):  # a: 200x232 (bilinear upscale path), b: 240x256
        got = metric(_nhwc(data[f"input_{key}"]))
        # scores ~13: fp32 accumulation order differs between CPUs (1.1e-4 = 8.6e-6 relative
        # measured on this project's 2026-12-02 machine), hence the relative bound as well
        np.testing.assert_allclose(got, data[f"score_{key}"], atol=TOL, rtol=2e-5)


def test_full_size_checkpoint_layout_converts():
    shapes = json.loads((FIXTURES / "iqa_full_shapes.json").read_text())["maniqa"]
    sd = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    assert "vit.blocks.11.mlp.fc2.weight" in sd and "swintransformer1.downsample.weight" in sd
    params = maniqa_params_from_torch(sd, maniqa_net.MANIQAConfig(), "full")
    assert params["head"]["tablock1_0"]["c_q"]["kernel"].shape == (784, 784)
    assert params["vit"]["blocks_9"]["attn"]["qkv"]["kernel"].shape == (768, 2304)
    sd["conv1.weight"] = np.zeros((768, 3072, 3, 3), np.float32)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"head/conv1/kernel: \(3, 3, 3072, 768\) vs \(1, 1, 3072, 768\)",
    ):
        maniqa_params_from_torch(sd, maniqa_net.MANIQAConfig(), "full")


def test_missing_weights_message(monkeypatch):
    monkeypatch.delenv(maniqa.ENV_VAR, raising=False)
    with pytest.raises(MissingWeightError, match="MANIQA_PIPAL-ae6d356b.pth.*ADCSR_MANIQA_WEIGHTS"):
        maniqa.create()


@pytest.mark.slow
def test_realsr_log_values(realsr, osediff_log):
    """Real PIPAL weights vs the per-image pyiqa log of OSEDiff's RealSR outputs (4 images; each
    is 20 ViT-B/8 crops, ~2 min on a 2-core CPU)."""
    if not os.environ.get(maniqa.ENV_VAR):
        pytest.skip(f"${maniqa.ENV_VAR} not set (real MANIQA PIPAL checkpoint)")
    metric = maniqa.create()
    for name, img, logged in osediff_outputs(realsr, osediff_log[0], "maniqa", 4):
        assert abs(metric(img[None])[0] - logged) < 1e-3, name


def test_create_from_torch_file(tiny, tmp_path):
    """The user-facing path: a torch .pth (here wrapped in 'params') -> create() -> scores."""
    torch = pytest.importorskip("torch")
    data, cfg, _ = tiny
    path = tmp_path / "maniqa_tiny.pth"
    torch.save(
        {"params": {k: torch.from_numpy(v) for k, v in seeded_state_dict(data).items()}}, path
    )
    opts = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    metric = get_metric("maniqa", weights_path=str(path), **opts)  # registry -> create()
    assert (metric.name, metric.higher_is_better, metric.needs_reference) == ("maniqa", True, False)
    np.testing.assert_allclose(metric(_nhwc(data["input_b"])), data["score_b"], atol=TOL, rtol=0)
