"""Generate the MUSIQ / MANIQA / CLIP-IQA parity fixtures from pyiqa's PyTorch modules (run once).

Not run by the tests: it needs pyiqa 0.1.16 + torch 2.14.1 + torchvision 0.29.1 + timm + openai-clip,
which the project does not depend on. Run it in a scratch venv outside the repository:

    python3 -m venv /tmp/iqa_venv
    /tmp/iqa_venv/bin/pip install torch==2.14.1 torchvision==0.29.1 pyiqa==0.1.16 timm
    /tmp/iqa_venv/bin/python scripts/make_iqa_fixtures.py tests/eval/fixtures

It writes, per metric, a small pyiqa-architecture model with random weights, inputs and pyiqa's
outputs. Weights are not stored as arrays (the MANIQA TAB and CLIP token-embedding matrices would
be several MB): each tensor is ``mean + std * N(0, 1)`` drawn from ``numpy.random.default_rng(seed)``
in state-dict order (then rounded to fp16 for CLIP, like OpenAI's checkpoint); names, shapes,
means and stds are stored and ``adcsr_jax.weights.iqa_common.seeded_state_dict`` rebuilds the
identical tensors.
Also written: ``iqa_full_shapes.json`` (state-dict shapes of the full-size pyiqa models, for the
converter tests) and ``clip_tokens.json`` (``clip.tokenize`` of the prompts and of test strings).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

SEED = 1234


def weight_spec(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, std) used to draw the random tensor ``name``."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 1.0, 0.1
    if leaf == "running_mean" or leaf.endswith("bias"):
        return (0.5, 0.1) if name == "fc_score.3.bias" else (0.0, 0.1)
    if leaf == "logit_scale":
        return math.log(100.0), 0.0
    if leaf == "text_projection":
        return 0.0, shape[0] ** -0.5
    if leaf == "weight" and len(shape) == 1:
        return 1.0, 0.1
    if leaf in ("weight", "in_proj_weight") and len(shape) >= 2:
        if "token_embedding" in name:
            return 0.0, 0.5
        return 0.0, float(np.prod(shape[1:])) ** -0.5
    return 0.0, 0.5  # embeddings, cls tokens, relative position bias tables


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int, fp16: bool):
    """Draw every tensor (state-dict order); returns (arrays, spec arrays for the npz)."""
    rng = np.random.default_rng(seed)
    arrays, means, stds = {}, [], []
    for name, shape in shapes.items():
        mean, std = weight_spec(name, shape)
        value = np.asarray(mean + std * rng.standard_normal(shape), dtype=np.float32)
        if fp16:
            value = value.astype(np.float16).astype(np.float32)
        arrays[name] = value
        means.append(mean)
        stds.append(std)
    spec = {
        "weight_names": np.array(list(shapes)),
        "weight_shapes": np.array(json.dumps([list(s) for s in shapes.values()])),
        "weight_mean": np.array(means, np.float64),
        "weight_std": np.array(stds, np.float64),
        "weight_seed": np.array(seed),
        "weight_fp16": np.array(fp16),
    }
    return arrays, spec


def load_random(model: torch.nn.Module, seed: int, fp16: bool = False) -> dict:
    shapes = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if v.dtype.is_floating_point and not k.endswith(("relative_position_index", "attn_mask"))
    }
    arrays, spec = random_state_dict(shapes, seed, fp16)
    missing = model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in arrays.items()}, strict=False
    )
    assert not missing.unexpected_keys, missing.unexpected_keys
    assert all(k.endswith(("relative_position_index", "attn_mask")) for k in missing.missing_keys)
    return spec


def smooth_image(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """uint8 NCHW natural-ish test image: upsampled noise plus a little fine noise."""
    coarse = torch.from_numpy(
        rng.random((n, 3, max(h // 16, 2), max(w // 16, 2))).astype(np.float32)
    )
    img = torch.nn.functional.interpolate(coarse, (h, w), mode="bicubic", align_corners=False)
    img = img.numpy() + 0.08 * rng.standard_normal((n, 3, h, w))
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8.astype(np.float32) / 255.0)


def make_musiq(out: Path, rng: np.random.Generator) -> dict:
    from pyiqa.archs.musiq_arch import MUSIQ

    cfg = dict(hidden_size=32, mlp_dim=48, num_heads=2, num_layers=2)
    model = MUSIQ(pretrained=False, **cfg).eval()
    spec = load_random(model, SEED)
    a = smooth_image(rng, 2, 96, 128)
    b = smooth_image(rng, 1, 400, 300)
    feats = {}

    def hook(module, inputs, output):  # returns None: keeps the module's output
        feats["enc"] = output[:, 0]

    model.transformer_encoder.register_forward_hook(hook)
    with torch.no_grad():
        out_a = model(to_tensor(a))
        cls_a = feats.pop("enc")
        out_b = model(to_tensor(b))
    np.savez_compressed(
        out / "musiq_tiny.npz",
        config=np.array(json.dumps(cfg)),
        input_a=a,
        input_b=b,
        score_a=out_a.numpy()[:, 0],
        score_b=out_b.numpy()[:, 0],
        cls_a=cls_a.numpy(),
        **spec,
    )
    return {k: list(v.shape) for k, v in MUSIQ(pretrained=False).state_dict().items()}


def make_maniqa(out: Path, rng: np.random.Generator) -> dict:
    import pyiqa.archs.maniqa_arch as maniqa_arch
    from timm.models.vision_transformer import VisionTransformer

    vit_cfg = dict(
        img_size=224,
        patch_size=8,
        embed_dim=16,
        depth=10,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=0,
    )
    cfg = dict(
        embed_dim=16,
        depths=[2, 2],
        window_size=4,
        dim_mlp=24,
        num_heads=[2, 2],
        num_tab=2,
        scale=0.13,
    )
    real_create = maniqa_arch.timm.create_model
    maniqa_arch.timm.create_model = lambda *a, **k: VisionTransformer(**vit_cfg)
    try:
        model = maniqa_arch.MANIQA(pretrained=False, **cfg).eval()
    finally:
        maniqa_arch.timm.create_model = real_create
    spec = load_random(model, SEED)
    a = smooth_image(rng, 2, 200, 232)  # min side <= 224: bilinear upscale path
    b = smooth_image(rng, 1, 240, 256)
    with torch.no_grad():
        out_a = model(to_tensor(a))
        out_b = model(to_tensor(b))
        crop = (to_tensor(b)[:, :, :224, :224] - 0.5) / 0.5
        model.vit(crop)
        feat = model.extract_feature(model.save_output)
        model.save_output.outputs.clear()
    np.savez_compressed(
        out / "maniqa_tiny.npz",
        config=np.array(json.dumps(cfg)),
        vit_config=np.array(json.dumps(vit_cfg)),
        input_a=a,
        input_b=b,
        score_a=out_a.numpy()[:, 0],
        score_b=out_b.numpy()[:, 0],
        vit_feature_b0=feat.numpy()[0],
        **spec,
    )
    maniqa_arch.timm.create_model = lambda *a, **k: real_create(
        "vit_base_patch8_224", pretrained=False
    )
    try:
        full = maniqa_arch.MANIQA(pretrained=False)
    finally:
        maniqa_arch.timm.create_model = real_create
    return {k: list(v.shape) for k, v in full.state_dict().items()}


def make_clip(out: Path, rng: np.random.Generator) -> tuple[dict, dict]:
    import clip
    import pyiqa.archs.clipiqa_arch as clipiqa_arch
    from pyiqa.archs.clip_model import CLIP, build_model

    tiny = CLIP(
        embed_dim=16,
        image_resolution=64,
        vision_layers=(1, 2, 1, 1),
        vision_width=8,
        vision_patch_size=None,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=2,
    )
    spec = load_random(tiny, SEED, fp16=True)
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    real_load = clipiqa_arch.load
    # pyiqa's clip_model.load() non-JIT path on a state dict: build_model (fp16 convert) + float().
    clipiqa_arch.load = lambda name, device: build_model(dict(state)).to(device).float()
    try:
        model = clipiqa_arch.CLIPIQA(backbone="RN50", pretrained=False).eval()
    finally:
        clipiqa_arch.load = real_load
    a = smooth_image(rng, 2, 64, 96)
    b = smooth_image(rng, 1, 75, 61)
    clip_model = model.clip_model[0]
    with torch.no_grad():
        out_a = model(to_tensor(a))
        out_b = model(to_tensor(b))
        norm = (to_tensor(a) - model.default_mean) / model.default_std
        img_feat = clip_model.encode_image(norm, pos_embedding=False)
        txt_feat = clip_model.encode_text(model.prompt_pairs)
    np.savez_compressed(
        out / "clip_tiny.npz",
        input_a=a,
        input_b=b,
        score_a=out_a.numpy()[:, 0],
        score_b=out_b.numpy()[:, 0],
        image_features_a=img_feat.numpy(),
        text_features=txt_feat.numpy(),
        prompt_tokens=model.prompt_pairs.numpy().astype(np.int32),
        **spec,
    )
    rn50 = CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12)
    shapes = {k: list(v.shape) for k, v in rn50.state_dict().items()}
    texts = [
        "Good image",
        "It's a dog's LIFE!!",
        "naïve café 123 4.5",
        "  multiple   spaces\tand\nnewlines ",
        "emoji 🙂 and &amp; html &lt;b&gt;",
        "don't''s we'LL see",
        "中文 字符 テスト",
        "C++ / x86_64 -- e=mc^2",
        "Noise-free image",
    ]
    tokens = {t: clip.tokenize(t)[0].tolist() for t in texts}
    return shapes, tokens


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/eval/fixtures")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    shapes = {"musiq": make_musiq(out, rng), "maniqa": make_maniqa(out, rng)}
    shapes["clip_rn50"], tokens = make_clip(out, rng)
    (out / "iqa_full_shapes.json").write_text(json.dumps(shapes))
    (out / "clip_tokens.json").write_text(json.dumps(tokens, ensure_ascii=False, indent=0))
    for f in sorted(out.glob("*")):
        print(f"{f}: {f.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
