"""MUSIQ (Ke et al., ICCV 2021) as pyiqa 0.1.13/0.1.16 computes it, in JAX/Flax.

Pipeline for an image in [0, 1] (pyiqa ``MUSIQ.forward`` in eval mode, ``pretrained='koniq10k'``):

1. ``x*2-1``; multi-scale representation: bicubic resizes (torch ``interpolate``, no antialias)
   to longer side 224 and 384 (``round`` of the aspect-preserving size) plus the original image.
2. Each scale is cut into 32x32 patches with TF-'SAME' zero padding; the resized scales are padded
   (masked) or cut to ceil(L/32)^2 patches; every patch carries a hash-based spatial position
   (grid 10x10, nearest-neighbour hash) and a scale index.
3. Per patch: weight-standardised 7x7/2 conv, GroupNorm, ReLU, 3x3/2 max-pool, one bottleneck
   (GN eps 1e-4), flatten (HWC) and a linear token embedding.
4. Transformer encoder (14 layers, 384 wide, 6 heads, masked attention with -1e3 fill) with a CLS
   token; the head on the CLS output is the score (KonIQ: one output = MOS on ~0-100).

The network and its preprocessing; the metric object is ``adcsr_jax.eval.musiq``, the checkpoint
reader ``adcsr_jax.weights.iqa_musiq``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.nn.attention import scaled_dot_product
from adcsr_jax.nn.metric_layers import HIGHEST, GroupNorm, Mlp, dense, layer_norm
from adcsr_jax.resize import resize


@dataclasses.dataclass(frozen=True)
class MUSIQConfig:
    """pyiqa ``MUSIQ`` constructor arguments (defaults = the KonIQ model)."""

    patch_size: int = 32
    num_class: int = 1
    hidden_size: int = 384
    mlp_dim: int = 1152
    num_heads: int = 6
    num_layers: int = 14
    num_scales: int = 3
    spatial_pos_grid_size: int = 10
    longer_side_lengths: tuple[int, ...] = (224, 384)
    # -1: every patch of the original resolution; None: no original-resolution scale.
    max_seq_len_from_original_res: int | None = -1


# ----------------------------------------------------------------------------- preprocessing


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (pyiqa ``exact_padding_2d``): (before, after)."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """torch ``interpolate(mode='nearest')`` source indices (float32 scale, as torch)."""
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def hashed_positions(grid: int, count_h: int, count_w: int) -> np.ndarray:
    """Hash-based spatial position index of each patch (row-major), in [0, grid*grid)."""
    hi = _nearest_index(grid, count_h)
    wi = _nearest_index(grid, count_w)
    return (hi[:, None] * grid + wi[None, :]).reshape(-1)


@dataclasses.dataclass(frozen=True)
class _ScalePlan:
    height: int  # resized size (== input for the original scale)
    width: int
    resize: bool
    seq_len: int  # patches kept (after padding / cutting)


def scale_plans(h: int, w: int, cfg: MUSIQConfig) -> list[_ScalePlan]:
    """Resized size and sequence length of every scale for an ``h`` x ``w`` input."""
    p = cfg.patch_size
    plans = []
    for length in sorted(cfg.longer_side_lengths):
        ratio = length / max(h, w)
        plans.append(
            _ScalePlan(round(h * ratio), round(w * ratio), True, math.ceil(length / p) ** 2)
        )
    if cfg.max_seq_len_from_original_res is not None:
        n = math.ceil(h / p) * math.ceil(w / p)
        keep = n if cfg.max_seq_len_from_original_res < 0 else cfg.max_seq_len_from_original_res
        plans.append(_ScalePlan(h, w, False, keep))
    return plans


def token_layout(h: int, w: int, cfg: MUSIQConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spatial index, scale index and mask (1 valid / 0 padding) of every token; static per size."""
    spatial, scale, mask = [], [], []
    p = cfg.patch_size
    for sid, plan in enumerate(scale_plans(h, w, cfg)):
        n = math.ceil(plan.height / p) * math.ceil(plan.width / p)
        pos = hashed_positions(
            cfg.spatial_pos_grid_size, math.ceil(plan.height / p), math.ceil(plan.width / p)
        )
        keep = min(n, plan.seq_len)
        pad = plan.seq_len - keep
        spatial.append(np.concatenate([pos[:keep], np.zeros(pad, np.int64)]))
        scale.append(np.concatenate([np.full(keep, sid), np.zeros(pad, np.int64)]))
        mask.append(np.concatenate([np.ones(keep), np.zeros(pad)]))
    return (
        np.concatenate(spatial).astype(np.int32),
        np.concatenate(scale).astype(np.int32),
        np.concatenate(mask).astype(np.float32),
    )


def _patches(x: jax.Array, p: int, seq_len: int) -> jax.Array:
    """(B, H, W, C) -> (B, seq_len, p, p, C): SAME-padded non-overlapping patches, padded/cut."""
    b, h, w, c = x.shape
    (t, bt), (left, r) = _same_pad(h, p, p), _same_pad(w, p, p)
    x = jnp.pad(x, ((0, 0), (t, bt), (left, r), (0, 0)))
    ch, cw = x.shape[1] // p, x.shape[2] // p
    x = x.reshape(b, ch, p, cw, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, ch * cw, p, p, c)
    n = ch * cw
    if n < seq_len:
        x = jnp.pad(x, ((0, 0), (0, seq_len - n), (0, 0), (0, 0), (0, 0)))
    return x[:, :seq_len]


def multiscale_patches(x: jax.Array, cfg: MUSIQConfig) -> jax.Array:
    """[-1, 1] NHWC batch -> (B, S, p, p, 3) patches of every scale (pyiqa order)."""
    _, h, w, _ = x.shape
    out = []
    for plan in scale_plans(h, w, cfg):
        y = x
        if plan.resize:
            y = resize(y, size=(plan.height, plan.width), mode="bicubic")
        out.append(_patches(y, cfg.patch_size, plan.seq_len))
    return jnp.concatenate(out, axis=1)


# ----------------------------------------------------------------------------- network


class StdConv(nn.Module):
    """Weight-standardised conv (unbiased std + 1e-5) with TF-'SAME' zero padding, no bias."""

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (self.kernel, self.kernel, x.shape[-1], self.features),
        )
        k = k - k.mean(axis=(0, 1, 2), keepdims=True)
        k = k / (jnp.std(k, axis=(0, 1, 2), keepdims=True, ddof=1) + 1e-5)
        pad = (
            _same_pad(x.shape[1], self.kernel, self.stride),
            _same_pad(x.shape[2], self.kernel, self.stride),
        )
        return jax.lax.conv_general_dilated(
            x,
            k,
            (self.stride, self.stride),
            pad,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=HIGHEST,
        )


class Bottleneck(nn.Module):
    """pyiqa MUSIQ ``Bottleneck`` (width = in channels, GN(32, eps 1e-4))."""

    outplanes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        identity = x
        if width != self.outplanes:
            identity = GroupNorm(32, 1e-4, name="gn_proj")(
                StdConv(self.outplanes, 1, name="conv_proj")(x)
            )
        x = nn.relu(GroupNorm(32, 1e-4, name="gn1")(StdConv(width, 1, name="conv1")(x)))
        x = nn.relu(GroupNorm(32, 1e-4, name="gn2")(StdConv(width, 3, name="conv2")(x)))
        x = GroupNorm(32, 1e-4, name="gn3")(StdConv(self.outplanes, 1, name="conv3")(x))
        return nn.relu(x + identity)


class MultiHeadAttention(nn.Module):
    dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        b, n, c = x.shape
        hd = c // self.num_heads

        def heads(t: jax.Array) -> jax.Array:
            return t.reshape(b, n, self.num_heads, hd)

        q = heads(dense(c, "query")(x))
        k = heads(dense(c, "key")(x))
        v = heads(dense(c, "value")(x))
        keep = (mask[:, None, :, None] * mask[:, None, None, :]) != 0
        out = scaled_dot_product(q, k, v, mask=keep, mask_value=-1e3)
        return dense(c, "out")(out.reshape(b, n, c))


class TransformerBlock(nn.Module):
    dim: int
    mlp_dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        y = layer_norm(1e-6, "norm1")(x)
        x = x + MultiHeadAttention(self.dim, self.num_heads, name="attention")(y, mask)
        return x + Mlp(self.mlp_dim, self.dim, name="mlp")(layer_norm(1e-6, "norm2")(x))


class _Blocks(nn.Module):
    """The ``transformer`` ModuleDict of ``encoderblock_i``."""

    cfg: MUSIQConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        c = self.cfg
        for i in range(c.num_layers):
            x = TransformerBlock(c.hidden_size, c.mlp_dim, c.num_heads, name=f"encoderblock_{i}")(
                x, mask
            )
        return x


class TransformerEncoder(nn.Module):
    cfg: MUSIQConfig

    @nn.compact
    def __call__(
        self, x: jax.Array, spatial: jax.Array, scale: jax.Array, mask: jax.Array
    ) -> jax.Array:
        c = self.cfg
        d = c.hidden_size
        pos = _Param((1, c.spatial_pos_grid_size**2, d), "position_emb", name="posembed_input")()
        sc = _Param((c.num_scales, d), "scale_emb", name="scaleembed_input")()
        cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
        x = x + pos[0][spatial] + sc[scale]
        b = x.shape[0]
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)
        mask = jnp.concatenate([jnp.ones((b, 1), mask.dtype), mask], axis=1)
        x = _Blocks(c, name="transformer")(x, mask)
        return layer_norm(1e-6, "encoder_norm")(x)


class _Param(nn.Module):
    """A module that only owns one named parameter (pyiqa's embedding wrappers)."""

    shape: tuple[int, ...]
    leaf: str

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param(self.leaf, nn.initializers.normal(0.02), self.shape)


class MUSIQNet(nn.Module):
    """Tokens (B, S, p, p, 3) in [-1, 1] + static layout -> score (B,) (MOS for KonIQ)."""

    cfg: MUSIQConfig

    @nn.compact
    def __call__(
        self, patches: jax.Array, spatial: jax.Array, scale: jax.Array, mask: jax.Array
    ) -> jax.Array:
        c = self.cfg
        b, s = patches.shape[:2]
        x = patches.reshape(b * s, *patches.shape[2:])
        x = StdConv(64, 7, 2, name="conv_root")(x)
        x = nn.relu(GroupNorm(32, 1e-6, name="gn_root")(x))
        pad = (
            (0, 0),
            _same_pad(x.shape[1], 3, 2),
            _same_pad(x.shape[2], 3, 2),
            (0, 0),
        )
        x = jnp.pad(x, pad)  # zero padding, as pyiqa's ExactPadding2d (after ReLU)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
        x = Bottleneck(256, name="block1")(x)
        x = dense(c.hidden_size, "embedding")(x.reshape(b, s, -1))
        m = jnp.broadcast_to(mask, (b, s))
        x = TransformerEncoder(c, name="transformer_encoder")(x, spatial, scale, m)
        if c.num_class > 1:
            q = jax.nn.softmax(dense(c.num_class, "head_0")(x[:, 0]), axis=-1)
            return (q * jnp.arange(1, c.num_class + 1, dtype=q.dtype)).sum(-1)
        return dense(1, "head")(x[:, 0])[:, 0]


def musiq_scores(params: Any, images: jax.Array, cfg: MUSIQConfig) -> jax.Array:
    """[0, 1] NHWC batch -> per-image MUSIQ score (B,). Jit with ``cfg`` static."""
    x = (images - 0.5) * 2
    spatial, scale, mask = token_layout(images.shape[1], images.shape[2], cfg)
    patches = multiscale_patches(x, cfg)
    return MUSIQNet(cfg).apply(
        {"params": params}, patches, jnp.asarray(spatial), jnp.asarray(scale), jnp.asarray(mask)
    )


def init_params(cfg: MUSIQConfig, seed: int = 0, size: tuple[int, int] = (64, 64)) -> Any:
    """Random params of the right structure (tests, benchmarks, checkpoint checks)."""
    x = jnp.zeros((1, *size, 3), jnp.float32)
    spatial, scale, mask = token_layout(size[0], size[1], cfg)
    patches = multiscale_patches(x, cfg)
    return MUSIQNet(cfg).init(jax.random.PRNGKey(seed), patches, spatial, scale, mask)["params"]
