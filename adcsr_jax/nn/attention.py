"""Multi-head attention with diffusers ``Attention`` semantics and parameter names.

Inner width = query width, head_dim = width / heads, scale 1/sqrt(head_dim) (torch SDPA's default,
so 48 in the pruned UNet), softmax in fp32 via ``jax.nn.dot_product_attention``. The same module
serves UNet self-/cross-attention (``attn1``/``attn2``: no q/k/v bias) and the VAE mid-block
attention (q/k/v bias, own GroupNorm ``group_norm``, residual connection, NHWC input).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcsr_jax.nn.axes import dense
from adcsr_jax.nn.norm import GroupNorm


def _chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, chunk: int):
    """Exact attention on ``(B, T, N, H)``: one loop per head over ``chunk`` queries at a time.

    The logits of one chunk stay cache-sized, the queries are scaled once (not the logits), and
    the softmax is normalised after the value product (one pass fewer over the logits). Each
    head gets its own independent loop, so XLA:CPU's thunk executor runs heads concurrently.
    Measured on this 2-core CPU at 4096 tokens x 5 heads x 48: 0.10-0.11 s at chunk 512 or 1024
    against 0.51 s for ``jax.nn.dot_product_attention`` (which materialises all logits) and
    0.07 s for torch's fused CPU kernel; in the whole student, chunk 512 is the fastest. Uses
    ``lax.map``, so it is opt-in (``query_chunk``), not for export graphs.

    Under differentiation each chunk is rematerialised (``jax.checkpoint``): the backward pass
    keeps only q, k and v and recomputes one chunk's logits at a time, as torch's fused SDPA and
    FlashAttention do, instead of holding every (heads, T, T) probability map. Measured with
    ``scripts/plan_components.py`` (full size, fp32, batch 1, 64x64 latent, chunk 1024): D's
    forward + backward 4.63 -> 3.12 GiB of XLA temporaries (5.45 unchunked), the student's
    2.70 -> 1.12 GiB (3.50 unchunked). Exact (the same ops run again); a plain forward lowers to
    the same graph as without it.
    """
    b, t, n, hd = q.shape
    q = q * jnp.asarray(scale, q.dtype)

    def one_chunk(qc: jax.Array, kh: jax.Array, vh: jax.Array) -> jax.Array:
        logits = jnp.einsum("bqh,bkh->bqk", qc, kh, preferred_element_type=jnp.float32)
        e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
        out = jnp.einsum("bqk,bkh->bqh", e.astype(vh.dtype), vh, preferred_element_type=jnp.float32)
        return (out / e.sum(-1, keepdims=True)).astype(qc.dtype)

    one_chunk = jax.checkpoint(one_chunk)  # backward recomputes a chunk's logits (see below)
    heads = []
    for h in range(n):
        kh, vh = k[:, :, h], v[:, :, h]
        chunks = q[:, :, h].reshape(b, t // chunk, chunk, hd).transpose(1, 0, 2, 3)
        out = jax.lax.map(lambda qc, kh=kh, vh=vh: one_chunk(qc, kh, vh), chunks)
        heads.append(out.transpose(1, 0, 2, 3).reshape(b, t, hd))
    return jnp.stack(heads, axis=2)


def scaled_dot_product(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: float | None = None,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    mask_value: float = -1e3,
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST,
) -> jax.Array:
    """``softmax(q k^T * scale + bias) v`` on ``(B, T, heads, D)`` tokens, at full fp32 precision.

    The attention of torch ``nn.MultiheadAttention`` and timm's ``Attention`` / ``WindowAttention``
    as the metric networks (MUSIQ, MANIQA, CLIP) use it: ``scale`` defaults to ``D ** -0.5``;
    ``bias`` (broadcast to ``(B, heads, Tq, Tk)``) is added to the logits (relative positions,
    shifted-window or causal masks); ``mask`` (same broadcast, True = keep) replaces the other
    logits by ``mask_value`` (MUSIQ's ``masked_fill(mask == 0, -1e3)``). Returns
    ``(B, Tq, heads, D)``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=precision) * scale
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, mask_value)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=precision)


def multi_head_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, heads: int, query_chunk: int | None = None
) -> jax.Array:
    """Scaled dot-product attention over ``(B, T, C)`` tokens split into ``heads`` heads.

    ``query_chunk`` (opt-in: CPU speed, training memory): use :func:`_chunked_attention` when
    it divides T < T.
    """
    b, t, width = q.shape
    if width % heads:
        raise ValueError(f"attention width {width} is not divisible by {heads} heads")
    head_dim = width // heads
    split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, head_dim)  # noqa: E731
    scale = 1.0 / math.sqrt(head_dim)
    if query_chunk and t > query_chunk and t % query_chunk == 0:
        out = _chunked_attention(split(q), split(k), split(v), scale, query_chunk)
    else:
        out = jax.nn.dot_product_attention(split(q), split(k), split(v), scale=scale)
    return out.reshape(b, t, width)


class Attention(nn.Module):
    """diffusers ``Attention`` (params ``to_q``, ``to_k``, ``to_v``, ``to_out_0``, ``group_norm``).

    Accepts ``(B, T, C)`` tokens or ``(B, H, W, C)`` maps (flattened to tokens and back).
    ``context`` (``(B, S, D)``) makes it cross-attention; without it, it attends to itself.
    """

    heads: int
    qkv_bias: bool = False
    group_norm: bool = False
    norm_num_groups: int | None = 32
    norm_eps: float = 1e-6
    residual: bool = False
    query_chunk: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        shape = x.shape
        width = shape[-1]
        tokens = x.reshape(shape[0], -1, width) if x.ndim == 4 else x
        if self.group_norm:
            tokens = GroupNorm(
                self.norm_num_groups, self.norm_eps, dtype=self.dtype, name="group_norm"
            )(tokens)
        source = tokens if context is None else context.astype(self.dtype)
        kv_axes = ("embed", "heads") if context is None else ("context", "heads")
        q = dense(width, ("embed", "heads"), use_bias=self.qkv_bias, dtype=self.dtype, name="to_q")(
            tokens
        )
        k = dense(width, kv_axes, use_bias=self.qkv_bias, dtype=self.dtype, name="to_k")(source)
        v = dense(width, kv_axes, use_bias=self.qkv_bias, dtype=self.dtype, name="to_v")(source)
        out = multi_head_attention(q, k, v, self.heads, self.query_chunk)
        out = dense(width, ("heads", "embed"), dtype=self.dtype, name="to_out_0")(out)
        out = out.reshape(shape)
        if self.residual:
            out = out + x.astype(out.dtype)
        return out
