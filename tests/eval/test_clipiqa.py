"""CLIP-IQA: BPE tokenizer vs OpenAI ``clip.tokenize``, parity with pyiqa's CLIPIQA on a tiny CLIP
(ModifiedResNet + text transformer built from a seeded random fp16 state dict; fixtures from
scripts/make_iqa_fixtures.py), RN50 layout checks, and the OSEDiff RealSR log when the real
``RN50.pt`` is supplied via $ADCSR_CLIP_RN50_WEIGHTS."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.eval import MissingWeightError, clipiqa, get_metric
from adcsr_jax.models import clip
from adcsr_jax.models.clip_tokenizer import ClipTokenizer, pre_tokenize
from adcsr_jax.testing.realsr import osediff_outputs
from adcsr_jax.weights import CheckpointMismatchError
from adcsr_jax.weights.iqa_clip import clip_params_from_torch
from adcsr_jax.weights.iqa_common import seeded_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def tiny():
    data = dict(np.load(FIXTURES / "clip_tiny.npz"))
    params, cfg = clip_params_from_torch(seeded_state_dict(data), "clip_tiny.npz")
    return data, cfg, params


def _nhwc(u8: np.ndarray) -> np.ndarray:
    return u8.transpose(0, 2, 3, 1).astype(np.float32) / 255.0


def test_tokenizer_matches_openai_clip(tokenizer):
    expected = json.loads((FIXTURES / "clip_tokens.json").read_text())
    assert len(expected) >= 8
    for text, ids in expected.items():
        assert tokenizer.tokenize(text)[0].tolist() == ids, text


def test_prompt_tokens_match_pyiqa(tokenizer, tiny):
    data, _, _ = tiny
    np.testing.assert_array_equal(tokenizer.tokenize(list(clipiqa.PROMPTS)), data["prompt_tokens"])


def test_pre_tokenize_rules():
    assert pre_tokenize("it's 42 x86!!") == ["it", "'s", "4", "2", "x", "8", "6", "!!"]
    assert pre_tokenize("<|startoftext|>a") == ["<|startoftext|>", "a"]


def test_tokenize_too_long_raises(tokenizer):
    with pytest.raises(ValueError, match="over CLIP's 77"):
        tokenizer.tokenize("word " * 80)


def test_config_read_off_state_dict(tiny):
    _, cfg, _ = tiny
    assert cfg.vision_layers == (1, 2, 1, 1) and cfg.vision_width == 8 and cfg.embed_dim == 16
    assert cfg.transformer_layers == 2 and cfg.transformer_heads == 1


def test_features_match_pyiqa(tiny):
    data, cfg, params = tiny
    text = clip.encode_text(params, jnp.asarray(data["prompt_tokens"]), cfg)
    np.testing.assert_allclose(np.asarray(text), data["text_features"], atol=TOL, rtol=0)
    img = clip.encode_image(params, jnp.asarray(_nhwc(data["input_a"])), cfg)
    np.testing.assert_allclose(np.asarray(img), data["image_features_a"], atol=TOL, rtol=0)


def test_scores_match_pyiqa(tiny):
    data, cfg, params = tiny
    metric = clipiqa.CLIPIQA(params, cfg, batch_size=2)
    for key in ("a", "b"):  # b: 75x61, odd sizes through the strided convs and avg-pools
        got = metric(_nhwc(data[f"input_{key}"]))
        np.testing.assert_allclose(got, data[f"score_{key}"], atol=TOL, rtol=0)


def test_rn50_layout_converts():
    shapes = json.loads((FIXTURES / "iqa_full_shapes.json").read_text())["clip_rn50"]
    sd = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    params, cfg = clip_params_from_torch(sd, "rn50")
    assert cfg == clip.CLIPConfig()
    assert params["visual"]["attnpool"]["c_proj"]["kernel"].shape == (2048, 1024)
    del sd["text_projection"]
    with pytest.raises(CheckpointMismatchError, match="text_projection"):
        clip_params_from_torch(sd, "rn50")


def test_missing_weights_message(monkeypatch):
    monkeypatch.delenv(clipiqa.ENV_VAR, raising=False)
    with pytest.raises(MissingWeightError, match="RN50.pt.*ADCSR_CLIP_RN50_WEIGHTS"):
        clipiqa.create()


@pytest.mark.slow
def test_realsr_log_values(realsr, osediff_log):
    """Real RN50 weights vs the per-image pyiqa log of OSEDiff's RealSR outputs (8 images)."""
    if not os.environ.get(clipiqa.ENV_VAR):
        pytest.skip(f"${clipiqa.ENV_VAR} not set (OpenAI CLIP RN50.pt)")
    metric = clipiqa.create()
    for name, img, logged in osediff_outputs(realsr, osediff_log[0], "clipiqa", 8):
        assert abs(metric(img[None])[0] - logged) < 1e-3, name


def test_create_from_torch_file(tiny, tmp_path, monkeypatch):
    """The user-facing path: a CLIP state dict file named by $ADCSR_CLIP_RN50_WEIGHTS -> scores."""
    torch = pytest.importorskip("torch")
    data, _, _ = tiny
    sd = {k: torch.from_numpy(v).half() for k, v in seeded_state_dict(data).items()}
    sd["input_resolution"] = torch.tensor(64)  # metadata entries RN50.pt carries
    path = tmp_path / "clip_tiny.pt"
    torch.save(sd, path)
    monkeypatch.setenv(clipiqa.ENV_VAR, str(path))
    metric = get_metric("clipiqa")  # registry -> create()
    assert (metric.name, metric.higher_is_better, metric.needs_reference) == (
        "clipiqa",
        True,
        False,
    )
    np.testing.assert_allclose(metric(_nhwc(data["input_b"])), data["score_b"], atol=TOL, rtol=0)


def test_read_torchscript_archive(tmp_path):
    """RN50.pt is a TorchScript archive: read_torch_file takes its state_dict()."""
    torch = pytest.importorskip("torch")
    from adcsr_jax.weights.iqa_common import read_torch_file

    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    sd = read_torch_file(path)
    assert set(sd) == {
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    np.testing.assert_array_equal(sd["0.weight"], module[0].weight.detach().numpy())
