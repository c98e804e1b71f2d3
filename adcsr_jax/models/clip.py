"""OpenAI CLIP ``ModifiedResNet`` image encoder and text transformer, as pyiqa's CLIP-IQA runs them.

Image side (OpenAI ``clip/model.py``, RN50): CLIP mean/std normalisation at the input's own size,
3-conv stem + avg-pool, 4 bottleneck stages with anti-aliased (avg-pool) striding, attention
pooling (32 heads) **without** the positional embedding (pyiqa ``pos_embedding=False``, so any
input size works) -> 1024-d feature. Text side: token + positional embedding, 12 residual
attention blocks with the causal mask, final LayerNorm, EOT token -> text projection.
The metric is ``adcsr_jax.eval.clipiqa``, the checkpoint reader ``adcsr_jax.weights.iqa_clip``,
the tokenizer ``adcsr_jax.models.clip_tokenizer``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.nn.attention import scaled_dot_product
from adcsr_jax.nn.metric_layers import HIGHEST, BatchNorm, avg_pool, conv, dense, layer_norm

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """CLIP shape (defaults = RN50), as pyiqa's ``build_model`` reads it off a state dict."""

    embed_dim: int = 1024
    vision_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    vision_width: int = 64
    image_resolution: int = 224  # only sizes the unused attention-pool positional embedding
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12

    @property
    def vision_heads(self) -> int:
        return self.vision_width * 32 // 64

    @classmethod
    def from_state_dict_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> CLIPConfig:
        """pyiqa ``build_model`` rules for a ModifiedResNet CLIP."""
        layers = tuple(
            len({k.split(".")[2] for k in shapes if k.startswith(f"visual.layer{b}.")})
            for b in (1, 2, 3, 4)
        )
        grid = round((shapes["visual.attnpool.positional_embedding"][0] - 1) ** 0.5)
        width = shapes["ln_final.weight"][0]
        return cls(
            embed_dim=shapes["text_projection"][1],
            vision_layers=layers,  # type: ignore[arg-type]
            vision_width=shapes["visual.layer1.0.conv1.weight"][0],
            image_resolution=grid * 32,
            context_length=shapes["positional_embedding"][0],
            vocab_size=shapes["token_embedding.weight"][0],
            transformer_width=width,
            transformer_heads=width // 64,
            transformer_layers=len(
                {k.split(".")[2] for k in shapes if k.startswith("transformer.resblocks.")}
            ),
        )


# ----------------------------------------------------------------------------- image tower


class CLIPBottleneck(nn.Module):
    planes: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = nn.relu(BatchNorm(name="bn1")(conv(self.planes, 1, "conv1", use_bias=False)(x)))
        out = nn.relu(
            BatchNorm(name="bn2")(conv(self.planes, 3, "conv2", padding=1, use_bias=False)(out))
        )
        out = avg_pool(out, self.stride)
        out = BatchNorm(name="bn3")(conv(self.planes * 4, 1, "conv3", use_bias=False)(out))
        identity = x
        if self.stride > 1 or x.shape[-1] != self.planes * 4:
            identity = avg_pool(x, self.stride)
            identity = conv(self.planes * 4, 1, "downsample_0", use_bias=False)(identity)
            identity = BatchNorm(name="downsample_1")(identity)
        return nn.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP attention pooling of the mean token over all tokens (no positional embedding)."""

    heads: int
    output_dim: int
    spacial_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        # Present in the checkpoint; pyiqa's CLIP-IQA calls with pos_embedding=False so it is unused.
        self.param(
            "positional_embedding", nn.initializers.normal(c**-0.5), (self.spacial_dim**2 + 1, c)
        )
        tokens = x.reshape(n, h * w, c)
        tokens = jnp.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)
        hd = c // self.heads
        q = dense(c, "q_proj")(tokens[:, :1]).reshape(n, 1, self.heads, hd)
        k = dense(c, "k_proj")(tokens).reshape(n, -1, self.heads, hd)
        v = dense(c, "v_proj")(tokens).reshape(n, -1, self.heads, hd)
        out = scaled_dot_product(q, k, v).reshape(n, c)
        return dense(self.output_dim, "c_proj")(out)


class ModifiedResNet(nn.Module):
    cfg: CLIPConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.cfg
        w = c.vision_width
        x = nn.relu(
            BatchNorm(name="bn1")(conv(w // 2, 3, "conv1", stride=2, padding=1, use_bias=False)(x))
        )
        x = nn.relu(BatchNorm(name="bn2")(conv(w // 2, 3, "conv2", padding=1, use_bias=False)(x)))
        x = nn.relu(BatchNorm(name="bn3")(conv(w, 3, "conv3", padding=1, use_bias=False)(x)))
        x = avg_pool(x, 2)
        for li, (blocks, mult) in enumerate(zip(c.vision_layers, (1, 2, 4, 8), strict=True)):
            for bi in range(blocks):
                stride = 2 if (li > 0 and bi == 0) else 1
                x = CLIPBottleneck(w * mult, stride, name=f"layer{li + 1}_{bi}")(x)
        return AttentionPool2d(
            c.vision_heads, c.embed_dim, c.image_resolution // 32, name="attnpool"
        )(x)


# ----------------------------------------------------------------------------- text tower


class ResidualAttentionBlock(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        b, n, d = x.shape
        hd = d // self.heads
        y = layer_norm(1e-5, "ln_1")(x)
        attn_p = _MHAParams(d, name="attn")()
        qkv = (
            jnp.einsum("bnd,ed->bne", y, attn_p["in_proj_weight"], precision=HIGHEST)
            + attn_p["in_proj_bias"]
        )
        q, k, v = (t.reshape(b, n, self.heads, hd) for t in jnp.split(qkv, 3, axis=-1))
        out = scaled_dot_product(q, k, v, bias=mask)
        out = (
            jnp.einsum("bnd,ed->bne", out.reshape(b, n, d), attn_p["out_w"], precision=HIGHEST)
            + attn_p["out_b"]
        )
        x = x + out
        y = layer_norm(1e-5, "ln_2")(x)
        y = dense(4 * d, "mlp_c_fc")(y)
        y = y * jax.nn.sigmoid(1.702 * y)  # QuickGELU
        return x + dense(d, "mlp_c_proj")(y)


class _MHAParams(nn.Module):
    """torch ``nn.MultiheadAttention`` parameters in torch layout (in_proj (3d, d), out_proj)."""

    dim: int

    @nn.compact
    def __call__(self) -> dict[str, jax.Array]:
        d = self.dim
        init = nn.initializers.normal(d**-0.5)
        out_p = _Linear(d, name="out_proj")()
        return {
            "in_proj_weight": self.param("in_proj_weight", init, (3 * d, d)),
            "in_proj_bias": self.param("in_proj_bias", nn.initializers.zeros, (3 * d,)),
            "out_w": out_p[0],
            "out_b": out_p[1],
        }


class _Linear(nn.Module):
    """A Dense's params exposed in torch layout ((out, in) as ``kernel.T``)."""

    dim: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        k = self.param("kernel", nn.initializers.normal(self.dim**-0.5), (self.dim, self.dim))
        b = self.param("bias", nn.initializers.zeros, (self.dim,))
        return k.T, b


class TextEncoder(nn.Module):
    """CLIP text transformer: tokens (N, 77) -> projected EOT feature (N, embed_dim)."""

    cfg: CLIPConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        c = self.cfg
        emb = self.param(
            "token_embedding", nn.initializers.normal(0.02), (c.vocab_size, c.transformer_width)
        )
        pos = self.param(
            "positional_embedding",
            nn.initializers.normal(0.01),
            (c.context_length, c.transformer_width),
        )
        x = emb[tokens] + pos
        n = c.context_length
        mask = jnp.where(jnp.triu(jnp.ones((n, n), bool), 1), -jnp.inf, 0.0)
        for i in range(c.transformer_layers):
            x = ResidualAttentionBlock(c.transformer_heads, name=f"resblocks_{i}")(x, mask)
        x = layer_norm(1e-5, "ln_final")(x)
        eot = x[jnp.arange(x.shape[0]), jnp.argmax(tokens, axis=-1)]
        proj = self.param(
            "text_projection", nn.initializers.normal(0.02), (c.transformer_width, c.embed_dim)
        )
        return jnp.dot(eot, proj, precision=HIGHEST)


# ----------------------------------------------------------------------------- encoders


def encode_image(params: Any, images: jax.Array, cfg: CLIPConfig) -> jax.Array:
    """[0, 1] NHWC batch -> CLIP image features (N, embed_dim), CLIP mean/std applied."""
    x = (images - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)
    return ModifiedResNet(cfg).apply({"params": params["visual"]}, x)


def encode_text(params: Any, tokens: jax.Array, cfg: CLIPConfig) -> jax.Array:
    return TextEncoder(cfg).apply({"params": params["text"]}, tokens)


def init_params(cfg: CLIPConfig, seed: int = 0) -> dict[str, Any]:
    """Random params of the right structure: {'visual', 'text', 'logit_scale'}."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x = jnp.zeros((1, 64, 64, 3), jnp.float32)
    tokens = jnp.zeros((1, cfg.context_length), jnp.int32)
    return {
        "visual": ModifiedResNet(cfg).init(k1, x)["params"],
        "text": TextEncoder(cfg).init(k2, tokens)["params"],
        "logit_scale": jnp.asarray(np.log(1 / 0.07), jnp.float32),
    }
