"""MANIQA (Yang et al., CVPRW 2022) with the PIPAL checkpoint, as pyiqa ``maniqa-pipal`` computes it.

Pipeline for an image in [0, 1] (pyiqa ``MANIQA.forward`` in eval mode):

1. ``(x-0.5)/0.5``; if min(H, W) <= 224 the image is first upscaled bilinearly by
   ``225/min(H, W)`` (torch ``interpolate(scale_factor=...)``).
2. 20 deterministic 224x224 crops: offsets ``i*step_h, j*step_w`` with ``step = (size-224)//4``,
   i in 0..3, j in 0..4 (the first 20 of a 5x5 grid, row-major).
3. Each crop through timm ``vit_base_patch8_224`` (patch 8, 768 wide, 12 heads); the patch tokens
   (CLS dropped) after blocks 6, 7, 8, 9 are concatenated -> (784, 3072).
4. Two transposed-attention blocks (TAB, attention over channels, with pyiqa's transpose/reshape
   channel scramble), 1x1 conv 3072->768, a Swin stage group (2 layers x 2 blocks, window 4,
   residual scale 0.13), TAB x2, 1x1 conv 768->384, Swin again.
5. Per-patch score (Linear-ReLU-Linear-ReLU) and weight (Linear-ReLU-Linear-Sigmoid); the image score
   is sum(w*s)/sum(w) over all 20x784 patches of the image jointly.

The network and its preprocessing; the metric object is ``adcsr_jax.eval.maniqa``, the checkpoint
reader ``adcsr_jax.weights.iqa_maniqa``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.nn.attention import scaled_dot_product
from adcsr_jax.nn.metric_layers import HIGHEST, Mlp, conv, dense, layer_norm
from adcsr_jax.resize import output_size, resize


@dataclasses.dataclass(frozen=True)
class MANIQAConfig:
    """pyiqa ``MANIQA`` arguments plus the ViT backbone shape (defaults = ``maniqa-pipal``)."""

    embed_dim: int = 768  # ViT width (MANIQA's embed_dim must equal it)
    vit_depth: int = 10  # blocks run (MANIQA reads blocks 6..9; later blocks are never used)
    vit_heads: int = 12
    vit_mlp: int = 3072
    patch_size: int = 8
    img_size: int = 224
    feature_blocks: tuple[int, ...] = (6, 7, 8, 9)
    depths: tuple[int, ...] = (2, 2)
    window_size: int = 4
    dim_mlp: int = 768
    num_heads: tuple[int, ...] = (4, 4)
    num_tab: int = 2
    scale: float = 0.13
    num_outputs: int = 1
    test_sample: int = 20
    crop_size: int = 224  # pyiqa hard-codes 224 in forward()

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


# ----------------------------------------------------------------------------- crops


def crop_plan(
    h: int, w: int, cfg: MANIQAConfig
) -> tuple[float | None, int, int, list[tuple[int, int]]]:
    """(upscale factor or None, height, width, crop offsets) of pyiqa ``uniform_crop``."""
    cs = cfg.crop_size
    factor = None
    if min(h, w) <= cs:
        factor = (cs + 1) / min(h, w)
        (h, w), _ = output_size((h, w), None, factor)
    n = cfg.test_sample
    root = int(np.sqrt(n))
    side = int(np.ceil(np.sqrt(n)))
    step_h, step_w = (h - cs) // root, (w - cs) // root
    offsets = [(i * step_h, j * step_w) for i in range(side) for j in range(side)][:n]
    return factor, h, w, offsets


def uniform_crops(x: jax.Array, cfg: MANIQAConfig) -> jax.Array:
    """(B, H, W, C) -> (B, n_crops, cs, cs, C) as pyiqa ``uniform_crop``."""
    _, h, w, _ = x.shape
    factor, _, _, offsets = crop_plan(h, w, cfg)
    if factor is not None:
        x = resize(x, scale_factor=factor, mode="bilinear")
    cs = cfg.crop_size
    return jnp.stack([x[:, i : i + cs, j : j + cs] for i, j in offsets], axis=1)


# ----------------------------------------------------------------------------- ViT (timm)


class ViTAttention(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        hd = c // self.heads
        qkv = dense(3 * c, "qkv")(x).reshape(b, n, 3, self.heads, hd)
        out = scaled_dot_product(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return dense(c, "proj")(out.reshape(b, n, c))


class ViTBlock(nn.Module):
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + ViTAttention(self.heads, name="attn")(layer_norm(1e-6, "norm1")(x))
        return x + Mlp(self.mlp, x.shape[-1], name="mlp")(layer_norm(1e-6, "norm2")(x))


class ViTFeatures(nn.Module):
    """timm ``VisionTransformer`` up to the last block MANIQA reads; returns those blocks' outputs."""

    cfg: MANIQAConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.cfg
        x = _PatchEmbed(c.embed_dim, c.patch_size, name="patch_embed")(x)
        b, n, d = x.shape
        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, d))
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, n + 1, d))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1) + pos
        feats = []
        for i in range(c.vit_depth):
            x = ViTBlock(c.vit_heads, c.vit_mlp, name=f"blocks_{i}")(x)
            if i in c.feature_blocks:
                feats.append(x[:, 1:])
        return jnp.concatenate(feats, axis=-1)


class _PatchEmbed(nn.Module):
    dim: int
    patch: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = conv(self.dim, self.patch, "proj", stride=self.patch)(x)
        return x.reshape(x.shape[0], -1, self.dim)


# ----------------------------------------------------------------------------- MANIQA head


class TABlock(nn.Module):
    """Attention over channels; x is (B, C, N) with Linear layers over N (pyiqa ``TABlock``)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, c, n = x.shape
        q = dense(n, "c_q")(x)
        k = dense(n, "c_k")(x)
        v = dense(n, "c_v")(x)
        attn = jax.nn.softmax(jnp.einsum("bcn,bdn->bcd", q, k, precision=HIGHEST) * n**-0.5, -1)
        out = jnp.einsum("bcd,bdn->bcn", attn, v, precision=HIGHEST)
        out = out.transpose(0, 2, 1).reshape(b, c, n)  # pyiqa's transpose(1,2).reshape(B,C,N)
        return out + x


def _relative_position_index(ws: int) -> np.ndarray:
    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def _window_partition(x: jax.Array, ws: int) -> jax.Array:
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _window_reverse(x: jax.Array, ws: int, h: int, w: int) -> jax.Array:
    c = x.shape[-1]
    b = x.shape[0] // ((h // ws) * (w // ws))
    x = x.reshape(b, h // ws, w // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _shift_mask(h: int, w: int, ws: int, shift: int) -> np.ndarray:
    img = np.zeros((1, h, w, 1), np.float32)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = (
        img.reshape(1, h // ws, ws, w // ws, ws, 1).transpose(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    )
    mask = win[:, None, :] - win[:, :, None]
    return np.where(mask != 0, -100.0, 0.0).astype(np.float32)


class WindowAttention(nn.Module):
    heads: int
    window: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
        b, n, c = x.shape
        hd = c // self.heads
        table = self.param(
            "relative_position_bias_table",
            nn.initializers.normal(0.02),
            ((2 * self.window - 1) ** 2, self.heads),
        )
        qkv = dense(3 * c, "qkv")(x).reshape(b, n, 3, self.heads, hd)
        rel = table[_relative_position_index(self.window).reshape(-1)].reshape(n, n, -1)
        bias = rel.transpose(2, 0, 1)[None]  # (1, heads, n, n)
        if mask is not None:  # shifted windows: per-window mask, windows are the inner batch axis
            nw = mask.shape[0]
            per_window = bias[:, None] + jnp.asarray(mask)[None, :, None]
            bias = jnp.broadcast_to(per_window, (b // nw, nw, self.heads, n, n))
            bias = bias.reshape(b, self.heads, n, n)
        out = scaled_dot_product(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], bias=bias)
        return dense(c, "proj")(out.reshape(b, n, c))


class SwinBlock(nn.Module):
    heads: int
    resolution: tuple[int, int]
    window: int
    shift: int
    dim_mlp: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, w = self.resolution
        ws, shift = self.window, self.shift
        if min(h, w) <= ws:
            ws, shift = min(h, w), 0
        b, _, c = x.shape
        shortcut = x
        y = layer_norm(1e-5, "norm1")(x).reshape(b, h, w, c)
        if shift:
            y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
        mask = _shift_mask(h, w, ws, shift) if shift else None
        y = WindowAttention(self.heads, ws, name="attn")(_window_partition(y, ws), mask)
        y = _window_reverse(y, ws, h, w)
        if shift:
            y = jnp.roll(y, (shift, shift), axis=(1, 2))
        x = shortcut + y.reshape(b, h * w, c)
        return x + Mlp(self.dim_mlp, c, name="mlp")(layer_norm(1e-5, "norm2")(x))


class BasicLayer(nn.Module):
    depth: int
    heads: int
    resolution: tuple[int, int]
    window: int
    dim_mlp: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.depth):
            shift = 0 if i % 2 == 0 else self.window // 2
            x = SwinBlock(
                self.heads, self.resolution, self.window, shift, self.dim_mlp, name=f"blocks_{i}"
            )(x)
        b, _, c = x.shape
        h, w = self.resolution
        x = nn.relu(conv(c, 3, "conv", padding=1)(x.reshape(b, h, w, c)))
        return x.reshape(b, h * w, c)


class SwinTransformer(nn.Module):
    """pyiqa ``maniqa_swin.SwinTransformer`` on tokens (B, H*W, C); residual ``scale`` per layer."""

    cfg: MANIQAConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.cfg
        res = (c.grid, c.grid)
        for i, (depth, heads) in enumerate(zip(c.depths, c.num_heads, strict=True)):
            x = (
                c.scale
                * BasicLayer(depth, heads, res, c.window_size, c.dim_mlp, name=f"layers_{i}")(x)
                + x
            )
        return x


class MANIQAHead(nn.Module):
    """ViT features (B', N, 4*D) -> per-patch (score, weight), each (B', N)."""

    cfg: MANIQAConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.cfg
        b, n, _ = x.shape
        g = c.grid
        x = x.transpose(0, 2, 1)  # b c (h w)
        for i in range(c.num_tab):
            x = TABlock(name=f"tablock1_{i}")(x)
        x = conv(c.embed_dim, 1, "conv1")(x.transpose(0, 2, 1).reshape(b, g, g, -1))
        x = SwinTransformer(c, name="swintransformer1")(x.reshape(b, n, -1))
        x = x.transpose(0, 2, 1)
        for i in range(c.num_tab):
            x = TABlock(name=f"tablock2_{i}")(x)
        x = conv(c.embed_dim // 2, 1, "conv2")(x.transpose(0, 2, 1).reshape(b, g, g, -1))
        swin2 = dataclasses.replace(c, embed_dim=c.embed_dim // 2)
        x = SwinTransformer(swin2, name="swintransformer2")(x.reshape(b, n, -1))
        d = c.embed_dim // 2
        s = nn.relu(dense(c.num_outputs, "fc_score_3")(nn.relu(dense(d, "fc_score_0")(x))))
        w = jax.nn.sigmoid(dense(c.num_outputs, "fc_weight_3")(nn.relu(dense(d, "fc_weight_0")(x))))
        return s.reshape(b, -1), w.reshape(b, -1)


class MANIQANet(nn.Module):
    """Normalised crops (B', 224, 224, 3) -> per-patch (score, weight)."""

    cfg: MANIQAConfig

    @nn.compact
    def __call__(self, crops: jax.Array) -> tuple[jax.Array, jax.Array]:
        feats = ViTFeatures(self.cfg, name="vit")(crops)
        return MANIQAHead(self.cfg, name="head")(feats)


def _crop_outputs(params: Any, crops: jax.Array, cfg: MANIQAConfig) -> tuple[jax.Array, jax.Array]:
    return MANIQANet(cfg).apply({"params": params}, crops)


def maniqa_scores(
    params: Any, images: jax.Array, cfg: MANIQAConfig, crop_chunk: int | None = None
) -> jax.Array:
    """[0, 1] NHWC batch -> per-image MANIQA score (B,). Jit with ``cfg``/``crop_chunk`` static.

    ``crop_chunk``: crops per sequential step (``lax.map``) to bound memory; None = all at once.
    The score is the same for any chunking (the weighted mean is taken afterwards).
    """
    x = (images - 0.5) / 0.5
    crops = uniform_crops(x, cfg)
    b, n = crops.shape[:2]
    flat = crops.reshape(b * n, *crops.shape[2:])
    if crop_chunk is None or crop_chunk >= b * n:
        s, w = _crop_outputs(params, flat, cfg)
    else:
        pad = (-(b * n)) % crop_chunk  # zero crops fill the last chunk; their outputs are dropped
        flat = jnp.pad(flat, ((0, pad), (0, 0), (0, 0), (0, 0)))
        chunks = flat.reshape(-1, crop_chunk, *flat.shape[1:])
        s, w = jax.lax.map(lambda c: _crop_outputs(params, c, cfg), chunks)
        s, w = s.reshape(-1, s.shape[-1])[: b * n], w.reshape(-1, w.shape[-1])[: b * n]
    s, w = s.reshape(b, -1), w.reshape(b, -1)
    return (w * s).sum(-1) / (w.sum(-1) + 1e-8)


def init_params(cfg: MANIQAConfig, seed: int = 0) -> Any:
    """Random params of the right structure (tests, benchmarks, checkpoint checks)."""
    x = jnp.zeros((1, cfg.img_size, cfg.img_size, 3), jnp.float32)
    return MANIQANet(cfg).init(jax.random.PRNGKey(seed), x)["params"]
