"""DAPE: RAM's image tagger (Swin-L at 384 + the query2label tagging head), in Flax.

Structure of ``ram/models/ram_lora.py`` (``RAMLora.generate_tag``) in cswry/OSEDiff and
Guaishou74851/AdcSR, which is RAM's (xinyu1205/recognize-anything ``ram/models/ram.py``) with
loralib LoRAs (merged by the loader, so the network here is plain):

* ``visual_encoder``: Swin Transformer (patch 4, window 12, depths 2-2-18-2, widths 192..1536,
  relative position bias, shifted windows with the -100 mask, patch merging), final LayerNorm,
  then the token mean prepended: ``(B, 1 + 144, 1536)``;
* ``image_proj`` (1536 -> 512);
* the tagging head: ``relu(wordvec_proj(label_embed))`` (4585 x 768 label queries) through two
  BERT layers of cross-attention only (``tagging_head.encoder.layer.N.crossattention`` /
  ``intermediate`` / ``output``, post-LN, eps 1e-12, 4 heads) over the image tokens, then
  ``fc`` (768 -> 1): logits ``(B, 4585)``.

:class:`Tagger` adds RAM's preprocessing (bilinear resize to 384, ImageNet mean/std), the
per-class thresholds (``sigmoid(logit) > threshold``), the deleted tags and the tag texts joined
with ``', '``, and :func:`prompt_embeddings` (tags -> SD 2.1 text embeddings) for the teacher.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.models.config_utils import UnsupportedConfigError, dtype_name
from adcsr_jax.models.text import CLIPTextTransformer, Tokenizer, encode_text
from adcsr_jax.nn.axes import conv, dense
from adcsr_jax.nn.norm import LayerNorm

TAG_DIR_ENV = "ADCSR_RAM_TAG_DIR"
TAG_LIST = "ram_tag_list.txt"
TAG_THRESHOLDS = "ram_tag_list_threshold.txt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MASK_VALUE = -100.0  # Swin's shifted-window mask value (not -inf)


@dataclasses.dataclass(frozen=True)
class TaggerConfig:
    """RAM Swin-L 384 (``configs/swin/config_swinL_384.json``) + ``q2l_config.json`` head."""

    image_size: int = 384
    patch_size: int = 4
    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    mlp_ratio: float = 4.0
    swin_eps: float = 1e-5
    embed_width: int = 512  # image_proj output, label_embed width (encoder_width)
    head_hidden: int = 768
    head_heads: int = 4
    head_layers: int = 2
    head_intermediate: int = 3072
    head_eps: float = 1e-12
    num_classes: int = 4585
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if len(self.depths) != len(self.num_heads):
            raise UnsupportedConfigError(
                f"depths {self.depths} and num_heads {self.num_heads} differ in length"
            )
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % 2 ** (len(self.depths) - 1):
            raise UnsupportedConfigError(
                f"image_size {self.image_size} must be patch_size x a multiple of "
                f"{2 ** (len(self.depths) - 1)}"
            )

    @property
    def vision_width(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def stage_resolution(self, i: int) -> int:
        return self.image_size // self.patch_size // 2**i

    def stage_window(self, i: int) -> tuple[int, int]:
        """(window, shift of the odd blocks) of stage ``i``: Swin shrinks the window to the map
        and stops shifting when the map is no larger than the window."""
        res = self.stage_resolution(i)
        if res <= self.window_size:
            return res, 0
        if res % self.window_size:
            raise UnsupportedConfigError(
                f"stage {i} map {res} is not a multiple of window {self.window_size}"
            )
        return self.window_size, self.window_size // 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --- Swin ------------------------------------------------------------------------------------


def relative_position_index(window: int) -> np.ndarray:
    """``(w*w, w*w)`` index into the ``(2w-1)^2`` bias table (Swin's ``relative_position_index``)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    flat = coords.reshape(2, -1)
    rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(res: int, window: int, shift: int) -> np.ndarray:
    """``(nW, w*w, w*w)`` float32: 0 within a region, -100 across regions (Swin's ``attn_mask``)."""
    img = np.zeros((res, res), np.float32)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for h in cuts:
        for w in cuts:
            img[h, w] = count
            count += 1
    win = _partition(img[None, :, :, None], window)[0, :, :, 0]  # (nW, w*w)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, np.float32(_MASK_VALUE), np.float32(0.0))


def _partition(x: Any, window: int) -> Any:
    """``(B, H, W, C)`` -> ``(B, nW, w*w, C)``, windows in row-major order (numpy or jax)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, window * window, c)


def _merge(x: jax.Array, window: int, h: int, w: int) -> jax.Array:
    """Inverse of :func:`_partition`."""
    b, c = x.shape[0], x.shape[-1]
    x = x.reshape(b, h // window, w // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias (``qkv``, ``proj``)."""

    heads: int
    window: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
        b, nw, n, c = x.shape
        hd = c // self.heads
        table = self.param(
            "relative_position_bias_table",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None)),
            ((2 * self.window - 1) ** 2, self.heads),
            jnp.float32,
        )
        qkv = dense(3 * c, ("embed", "heads"), dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(b, nw, n, 3, self.heads, hd)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        q = q * jnp.asarray(hd**-0.5, q.dtype)
        logits = jnp.einsum("bwqhd,bwkhd->bwhqk", q, k, preferred_element_type=jnp.float32)
        bias = table[relative_position_index(self.window).reshape(-1)]
        logits = logits + bias.reshape(n, n, self.heads).transpose(2, 0, 1)
        if mask is not None:
            logits = logits + jnp.asarray(mask)[None, :, None]
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bwhqk,bwkhd->bwqhd", weights, v).reshape(b, nw, n, c)
        return dense(c, ("heads", "embed"), dtype=self.dtype, name="proj")(out)


class SwinMlp(nn.Module):
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h = dense(self.hidden, ("embed", "mlp"), dtype=self.dtype, name="fc1")(x)
        h = jax.nn.gelu(h, approximate=False)
        return dense(c, ("mlp", "embed"), dtype=self.dtype, name="fc2")(h)


class SwinBlock(nn.Module):
    """``norm1`` -> (shifted) window attention -> +x; ``norm2`` -> ``mlp`` -> +x."""

    heads: int
    res: int
    window: int
    shift: int
    mlp_ratio: float = 4.0
    eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, length, c = x.shape
        ln = lambda name: LayerNorm(self.eps, dtype=self.dtype, name=name)  # noqa: E731
        h = ln("norm1")(x).reshape(b, self.res, self.res, c)
        s = self.shift
        if s:
            h = jnp.roll(h, (-s, -s), axis=(1, 2))
        mask = shifted_window_mask(self.res, self.window, s) if s else None
        h = WindowAttention(self.heads, self.window, dtype=self.dtype, name="attn")(
            _partition(h, self.window), mask
        )
        h = _merge(h, self.window, self.res, self.res)
        if s:
            h = jnp.roll(h, (s, s), axis=(1, 2))
        x = x + h.reshape(b, length, c)
        hidden = int(c * self.mlp_ratio)
        return x + SwinMlp(hidden, dtype=self.dtype, name="mlp")(ln("norm2")(x))


class PatchMerging(nn.Module):
    """2x2 neighbours (order x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]) -> ``norm``
    -> ``reduction`` (4C -> 2C, no bias)."""

    res: int
    eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, _, c = x.shape
        x = x.reshape(b, self.res, self.res, c)
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        x = jnp.concatenate(parts, axis=-1).reshape(b, -1, 4 * c)
        x = LayerNorm(self.eps, dtype=self.dtype, name="norm")(x)
        return dense(2 * c, ("embed", "embed"), use_bias=False, dtype=self.dtype, name="reduction")(
            x
        )


class _Stage(nn.Module):
    """``blocks_N`` then ``downsample`` (all stages but the last)."""

    config: TaggerConfig
    index: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, i = self.config, self.index
        dt = jnp.dtype(cfg.dtype)
        window, shift = cfg.stage_window(i)
        res = cfg.stage_resolution(i)
        for j in range(cfg.depths[i]):
            x = SwinBlock(
                cfg.num_heads[i],
                res,
                window,
                shift if j % 2 else 0,
                cfg.mlp_ratio,
                cfg.swin_eps,
                dtype=dt,
                name=f"blocks_{j}",
            )(x)
        if i < len(cfg.depths) - 1:
            x = PatchMerging(res, cfg.swin_eps, dtype=dt, name="downsample")(x)
        return x


class _PatchEmbed(nn.Module):
    config: TaggerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        p = cfg.patch_size
        dt = jnp.dtype(cfg.dtype)
        x = conv(cfg.embed_dim, p, stride=p, padding=((0, 0), (0, 0)), dtype=dt, name="proj")(x)
        x = x.reshape(x.shape[0], -1, cfg.embed_dim)
        return LayerNorm(cfg.swin_eps, dtype=dt, name="norm")(x)


class SwinTransformer(nn.Module):
    """NHWC normalised image ``(B, S, S, 3)`` -> ``(B, 1 + L, C)``: token mean, then tokens."""

    config: TaggerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        x = _PatchEmbed(cfg, name="patch_embed")(x.astype(jnp.dtype(cfg.dtype)))
        for i in range(len(cfg.depths)):
            x = _Stage(cfg, i, name=f"layers_{i}")(x)
        x = LayerNorm(cfg.swin_eps, dtype=jnp.dtype(cfg.dtype), name="norm")(x)
        return jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)


# --- tagging head ----------------------------------------------------------------------------


class _CrossSelf(nn.Module):
    """BERT ``crossattention.self``: ``query`` (labels), ``key`` / ``value`` (image tokens)."""

    hidden: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        b, n = x.shape[0], x.shape[1]
        hd = self.hidden // self.heads
        proj = lambda name: dense(self.hidden, ("embed", "heads"), dtype=self.dtype, name=name)  # noqa: E731
        q = proj("query")(x).reshape(b, n, self.heads, hd)
        k = proj("key")(context).reshape(b, -1, self.heads, hd)
        v = proj("value")(context).reshape(b, -1, self.heads, hd)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits / np.float32(np.sqrt(hd)), axis=-1).astype(self.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, self.hidden)


class _DenseLN(nn.Module):
    """BERT ``*Output``: ``dense`` then ``LayerNorm(h + residual)``."""

    width: int
    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, residual: jax.Array) -> jax.Array:
        h = dense(self.width, ("mlp", "embed"), dtype=self.dtype, name="dense")(h)
        return LayerNorm(self.eps, dtype=self.dtype, name="LayerNorm")(h + residual)


class _CrossAttention(nn.Module):
    hidden: int
    heads: int
    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        h = _CrossSelf(self.hidden, self.heads, dtype=self.dtype, name="self")(x, context)
        return _DenseLN(self.hidden, self.eps, dtype=self.dtype, name="output")(h, x)


class _Intermediate(nn.Module):
    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = dense(self.width, ("embed", "mlp"), dtype=self.dtype, name="dense")(x)
        return jax.nn.gelu(h, approximate=False)


class TaggingLayer(nn.Module):
    """RAM's ``BertLayer`` in ``mode='tagging'``: cross-attention, then the feed-forward."""

    config: TaggerConfig

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        a = _CrossAttention(
            cfg.head_hidden, cfg.head_heads, cfg.head_eps, dt, name="crossattention"
        )(x, context)
        h = _Intermediate(cfg.head_intermediate, dt, name="intermediate")(a)
        return _DenseLN(cfg.head_hidden, cfg.head_eps, dt, name="output")(h, a)


class _LayerList(nn.Module):
    config: TaggerConfig

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        for i in range(self.config.head_layers):
            x = TaggingLayer(self.config, name=f"layer_{i}")(x, context)
        return x


class _TaggingHead(nn.Module):
    config: TaggerConfig

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        return _LayerList(self.config, name="encoder")(x, context)


class RAMTagger(nn.Module):
    """Normalised ``(B, S, S, 3)`` images -> tag logits ``(B, num_classes)``."""

    config: TaggerConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        s = cfg.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"RAMTagger wants (B, {s}, {s}, 3) images, got {images.shape}")
        feats = SwinTransformer(cfg, name="visual_encoder")(images)
        image_embeds = dense(cfg.embed_width, ("embed", "embed"), dtype=dt, name="image_proj")(
            feats
        )
        label_embed = self.param(
            "label_embed",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
            (cfg.num_classes, cfg.embed_width),
            jnp.float32,
        )
        labels = dense(cfg.head_hidden, ("embed", "embed"), dtype=dt, name="wordvec_proj")(
            label_embed.astype(dt)
        )
        labels = jnp.broadcast_to(jax.nn.relu(labels), (images.shape[0], *labels.shape))
        h = _TaggingHead(cfg, name="tagging_head")(labels, image_embeds)
        return dense(1, ("embed", None), dtype=dt, name="fc")(h)[..., 0].astype(jnp.float32)


# --- preprocessing ---------------------------------------------------------------------------


def bilinear_matrix(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """``(out, in)`` float32 matrix of torch's bilinear resize (align_corners=False) along one
    axis; ``antialias=True`` is ``F.interpolate(..., antialias=True)`` (torchvision's ``Resize``
    default on tensors since 0.17; beyond float rounding it only differs when shrinking)."""
    scale = in_size / out_size
    mat = np.zeros((out_size, in_size), np.float64)
    if antialias:  # ATen's _compute_weights_aa, in float32 as for float input
        f32 = np.float32
        sc = f32(scale)
        support = sc if sc >= 1 else f32(1)
        invscale = f32(1.0) / sc if sc >= 1 else f32(1)
        for i in range(out_size):
            center = f32(float(sc) * (i + 0.5))
            lo = max(int(float(center) - float(support) + 0.5), 0)
            hi = min(int(float(center) + float(support) + 0.5), in_size)
            j = np.arange(lo, hi)
            x = ((j - center).astype(f32) + 0.5) * float(invscale)
            w = np.maximum(f32(0), f32(1) - np.abs(x.astype(f32))).astype(f32)
            mat[i, lo:hi] = w / w.sum(dtype=f32)
        return mat.astype(np.float32)
    s = np.float32(scale)
    real = np.maximum(s * (np.arange(out_size, dtype=np.float32) + 0.5) - 0.5, 0).astype(np.float32)
    idx = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    lam = np.clip(real - idx, 0, 1)
    idx1 = np.minimum(idx + 1, in_size - 1)
    rows = np.arange(out_size)
    np.add.at(mat, (rows, idx), 1 - lam)
    np.add.at(mat, (rows, idx1), lam)
    return mat.astype(np.float32)


def preprocess(images: jax.Array, size: int = 384, antialias: bool = True) -> jax.Array:
    """NHWC ``[0, 1]`` images -> ``Resize((size, size))`` + ImageNet normalisation (RAM's
    ``ram_transforms`` in OSEDiff ``test_osediff.py`` and AdcSR ``train.py``)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3) in [0, 1], got shape {images.shape}")
    x = images.astype(jnp.float32)
    h, w = x.shape[1], x.shape[2]
    if (h, w) != (size, size):
        hp = jax.lax.Precision.HIGHEST
        x = jnp.einsum("oh,bhwc->bowc", bilinear_matrix(h, size, antialias), x, precision=hp)
        x = jnp.einsum("pw,bowc->bopc", bilinear_matrix(w, size, antialias), x, precision=hp)
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    return (x - mean) / std


# --- tag data and the Tagger -----------------------------------------------------------------


def default_tag_dir() -> Path:
    """``$ADCSR_RAM_TAG_DIR``; else the vendored ``third_party/ram`` of a source checkout; else
    the copy a wheel install puts in ``<sys.prefix>/share/adcsr_jax/ram`` (``pyproject.toml``'s
    ``data-files``)."""
    if os.environ.get(TAG_DIR_ENV):
        return Path(os.environ[TAG_DIR_ENV])
    checkout = Path(__file__).resolve().parents[2] / "third_party" / "ram"
    installed = Path(sys.prefix) / "share" / "adcsr_jax" / "ram"
    return installed if not checkout.is_dir() and installed.is_dir() else checkout


def read_tag_files(
    tag_list: str | os.PathLike[str] | None = None,
    thresholds: str | os.PathLike[str] | None = None,
    *,
    threshold: float = 0.68,
    max_threshold: float = 0.9,
    add_threshold: float = 0.0,
) -> tuple[tuple[str, ...], np.ndarray]:
    """RAM's tag texts and per-class thresholds (``RAMLora.__init__``: a class value above
    ``max_threshold`` is kept, others become ``min(value + add_threshold, max_threshold)``;
    classes without a value keep ``threshold``)."""
    tag_path = Path(tag_list) if tag_list else default_tag_dir() / TAG_LIST
    thr_path = Path(thresholds) if thresholds else default_tag_dir() / TAG_THRESHOLDS
    for p in (tag_path, thr_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p}: RAM tag file not found (RAM's ram/data/{p.name}; vendored in "
                f"third_party/ram/, or set ${TAG_DIR_ENV} to a folder holding {TAG_LIST} "
                f"and {TAG_THRESHOLDS})"
            )
    tags = tuple(tag_path.read_text(encoding="utf-8").splitlines())
    values = []
    for n, line in enumerate(thr_path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            values.append(float(line.strip()))
        except ValueError:
            raise ValueError(f"{thr_path}:{n}: not a number: {line!r}") from None
    if len(values) > len(tags):
        raise ValueError(f"{thr_path} has {len(values)} thresholds for {len(tags)} tags")
    out = np.full(len(tags), threshold, np.float32)
    v = np.asarray(values, np.float32)
    out[: len(v)] = np.where(v > max_threshold, v, np.minimum(v + add_threshold, max_threshold))
    return tags, out


@dataclasses.dataclass
class Tagger:
    """RAM/DAPE with its preprocessing and tag data; ``images`` are NHWC in ``[0, 1]``."""

    module: RAMTagger
    params: Any
    tag_list: tuple[str, ...]
    thresholds: np.ndarray
    delete_tag_index: tuple[int, ...] = ()
    antialias: bool = True

    def __post_init__(self) -> None:
        n = self.module.config.num_classes
        if len(self.tag_list) != n or self.thresholds.shape != (n,):
            raise ValueError(
                f"tagger has {n} classes but {len(self.tag_list)} tags and "
                f"{self.thresholds.shape[0]} thresholds"
            )

    def logits(self, images: jax.Array) -> jax.Array:
        """``(B, num_classes)`` fp32 tag logits."""
        return _tagger_logits(self.module, self.params, jnp.asarray(images), self.antialias)

    def predictions(self, images: jax.Array) -> np.ndarray:
        """``(B, num_classes)`` bool: ``sigmoid(logit) > threshold``, deleted tags off."""
        probs = np.asarray(jax.nn.sigmoid(self.logits(images)))
        hits = probs > self.thresholds
        hits[:, list(self.delete_tag_index)] = False
        return hits

    def tags(self, images: jax.Array) -> list[str]:
        """One string per image: the detected tags in class order joined with ``', '``."""
        return [
            ", ".join(self.tag_list[i] for i in np.flatnonzero(row))
            for row in self.predictions(images)
        ]


def _apply(module: RAMTagger, params: Any, images: jax.Array) -> jax.Array:
    return module.apply({"params": params}, images)


# Two programs: the resize (one per input size, cheap) and the network (one per batch size).
_preprocess = jax.jit(preprocess, static_argnums=(1, 2))
_network = jax.jit(_apply, static_argnums=0)


def _tagger_logits(module: RAMTagger, params: Any, images: jax.Array, antialias: bool) -> jax.Array:
    x = _preprocess(images, module.config.image_size, antialias)
    return _network(module, params, x)


def osediff_prompt(tags: str, user_prompt: str = "") -> str:
    """OSEDiff ``test_osediff.py``'s prompt: ``f"{tags}, {user_prompt},"``."""
    return f"{tags}, {user_prompt},"


def prompt_embeddings(
    tagger: Tagger,
    text_encoder: tuple[CLIPTextTransformer, Any],
    lr_images: jax.Array,
    *,
    user_prompt: str | None = None,
    tokenizer: Tokenizer | None = None,
) -> jax.Array:
    """``(B, 77, 1024)`` text embeddings of the tags of ``lr_images`` (NHWC, ``[0, 1]``).

    ``user_prompt=None``: the tags alone, as AdcSR ``train.py`` conditions stage 2; a string:
    OSEDiff's inference prompt :func:`osediff_prompt` (``""`` is its default).
    """
    texts = tagger.tags(lr_images)
    if user_prompt is not None:
        texts = [osediff_prompt(t, user_prompt) for t in texts]
    module, params = text_encoder
    return encode_text(module, params, texts, tokenizer)


# --- tags -> token ids on the device -----------------------------------------------------------

SEPARATOR = ", "


@dataclasses.dataclass(frozen=True)
class TagTokens:
    """Token ids of every tag, so a prompt ``', '.join(tags) + suffix`` tokenizes on the device.

    Valid because CLIP's pre-tokenisation splits at the ``,`` and spaces between tags: the ids of
    the joined text are each tag's ids separated by the id of ``,``. :meth:`build` checks this
    for every tag (RAM's tags all start and end with a letter or digit) and for the suffix.
    """

    table: np.ndarray  # (num_classes, max_len + 1) int32: the tag's ids, then ',' , then pads
    lengths: np.ndarray  # (num_classes,) int32 ids per tag
    suffix: tuple[int, ...]  # ids after the tags (OSEDiff: those of ", {user_prompt},")
    sot: int
    eot: int
    pad: int
    context_length: int = 77

    @classmethod
    def build(
        cls, tag_list: Sequence[str], tokenizer: Tokenizer, user_prompt: str | None = None
    ) -> TagTokens:
        """``user_prompt=None``: the tags alone (AdcSR ``train.py``); else OSEDiff's prompt."""
        sep = tokenizer.encode(SEPARATOR)
        if len(sep) != 1:
            raise ValueError(f"{SEPARATOR!r} is {len(sep)} tokens, expected 1")
        ids = [tokenizer.encode(t) for t in tag_list]
        bad = [
            t
            for t, i in zip(tag_list, ids, strict=True)
            if tokenizer.encode(f"a{SEPARATOR}{t}{SEPARATOR}a")
            != [*tokenizer.encode("a"), *sep, *i, *sep, *tokenizer.encode("a")]
        ]
        if bad:
            raise ValueError(f"tags whose ids change when joined with {SEPARATOR!r}: {bad[:5]}")
        suffix: list[int] = []
        if user_prompt is not None:
            suffix = tokenizer.encode(osediff_prompt("", user_prompt))
            if tokenizer.encode(osediff_prompt("a", user_prompt)) != [
                *tokenizer.encode("a"),
                *suffix,
            ]:
                raise ValueError(
                    f"user prompt {user_prompt!r} does not tokenize apart from the tags"
                )
        width = max(len(i) for i in ids) + 1
        table = np.full((len(ids), width), tokenizer.pad_id, np.int32)
        for c, i in enumerate(ids):
            table[c, : len(i)] = i
            table[c, len(i)] = sep[0]
        return cls(
            table,
            np.asarray([len(i) for i in ids], np.int32),
            tuple(suffix),
            tokenizer.sot,
            tokenizer.eot,
            tokenizer.pad_id,
            tokenizer.context_length,
        )

    def ids(self, hits: jax.Array) -> jax.Array:
        """``(B, num_classes)`` bool detections -> ``(B, 77)`` int32 ids (jittable): what
        ``tokenize([', '.join(tags) + suffix])`` gives, truncated with the end token kept."""
        n = self.context_length
        b, c = hits.shape
        width = self.table.shape[1]
        seg = jnp.where(hits, jnp.asarray(self.lengths) + 1, 0)  # a tag and its ','
        start = jnp.cumsum(seg, axis=1) - seg
        total = seg.sum(1)
        total = total - (total > 0)  # no ',' after the last tag
        j = jnp.arange(width)
        valid = hits[:, :, None] & (j[None, None, :] <= jnp.asarray(self.lengths)[None, :, None])
        pos = 1 + start[:, :, None] + j[None, None, :]
        pos = jnp.where(valid & (pos < n - 1), pos, n)  # out of range -> dropped
        rows = jnp.arange(b)[:, None, None]
        out = jnp.full((b, n), self.pad, jnp.int32).at[:, 0].set(self.sot)
        out = out.at[rows, pos].set(
            jnp.broadcast_to(jnp.asarray(self.table), pos.shape), mode="drop"
        )
        if self.suffix:
            k = jnp.arange(len(self.suffix))
            spos = 1 + total[:, None] + k[None, :]
            spos = jnp.where(spos < n - 1, spos, n)
            vals = jnp.broadcast_to(jnp.asarray(self.suffix, jnp.int32), spos.shape)
            out = out.at[jnp.arange(b)[:, None], spos].set(vals, mode="drop")
        end = jnp.minimum(1 + total + len(self.suffix), n - 1)[:, None]
        col = jnp.arange(n)[None, :]
        return jnp.where(col == end, self.eot, jnp.where(col > end, self.pad, out))


def detections(
    module: RAMTagger,
    params: Any,
    thresholds: jax.Array,
    images: jax.Array,
    *,
    antialias: bool = True,
    delete_tag_index: Sequence[int] = (),
) -> jax.Array:
    """``(B, num_classes)`` bool ``sigmoid(logit) > threshold`` on the device (jittable)."""
    x = preprocess(images, module.config.image_size, antialias)
    hits = jax.nn.sigmoid(module.apply({"params": params}, x)) > thresholds
    if delete_tag_index:
        hits = hits.at[:, jnp.asarray(list(delete_tag_index))].set(False)
    return hits


def prompt_embeddings_on_device(
    tagger: Tagger,
    tag_tokens: TagTokens,
    text_encoder: tuple[CLIPTextTransformer, Any],
    lr_images: jax.Array,
    *,
    return_hits: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """:func:`prompt_embeddings` with no host round trip: call it inside a jitted step (the
    tagger's and text encoder's params are closed over or passed as ``tagger.params`` /
    ``text_encoder[1]``). Same result as :func:`prompt_embeddings` with the ``user_prompt``
    ``tag_tokens`` was built with. ``return_hits``: also the ``(B, num_classes)`` detections."""
    hits = detections(
        tagger.module,
        tagger.params,
        jnp.asarray(tagger.thresholds),
        lr_images,
        antialias=tagger.antialias,
        delete_tag_index=tagger.delete_tag_index,
    )
    module, params = text_encoder
    emb = module.apply({"params": params}, tag_tokens.ids(hits))
    return (emb, hits) if return_hits else emb
