"""The Stable Diffusion UNet (diffusers ``UNet2DConditionModel`` semantics), NHWC, any width.

One code path serves SD 2.1-base (``UNetConfig()``) and the pruned AdcSR student UNet
(``time_embedding=False``, ``cross_attention_dim=None``, ``norm_num_groups=None``, other widths).
Skip connections are values returned by the down blocks and consumed by the up blocks.
Parameter paths mirror diffusers: ``down_blocks_0/resnets_1/conv1/kernel``,
``mid_block/attentions_0/transformer_blocks_0/attn1/to_q/kernel``, ``time_embedding/linear_1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adcsr_jax.models.config_utils import (
    UnsupportedConfigError,
    as_tuple,
    check_supported,
    config_from_dict,
    config_to_dict,
    dtype_name,
)
from adcsr_jax.nn import (
    Downsample2D,
    GroupNorm,
    ResnetBlock2D,
    TimestepEmbedding,
    Transformer2D,
    Upsample2D,
    conv,
    timestep_embedding,
)

DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet2D`; the defaults are Stable Diffusion 2.1-base.

    ``num_attention_heads`` is per down block (up blocks use them reversed, the mid block the
    last); head_dim = width / heads. ``cross_attention_dim=None`` removes every ``attn2``/``norm2``;
    ``time_embedding=False`` removes ``time_embedding`` and every ``time_emb_proj``.
    ``norm_num_groups=None`` gives each GroupNorm ``group_count(width)`` groups. ``norm_eps`` is the
    ResNet / output GroupNorm eps, ``transformer_norm_eps`` the transformer GroupNorm eps,
    ``layer_norm_eps`` the transformer LayerNorm eps. ``dtype`` is the compute dtype (params fp32).
    ``attention_query_chunk`` (e.g. 256) computes attention a head and that many queries at a time
    (exact; about 2.5x faster attention on CPU at 4096 tokens; uses loops, so not for export).
    ``conv_matmul_max_pixels`` (e.g. 256) runs convs whose output map has at most that many
    pixels as one im2col matmul (exact; 1.2-3x faster on XLA:CPU at 8x8 and 16x16, see
    :mod:`adcsr_jax.nn.conv`). ``remat`` rematerialises each down, mid and up block in the
    backward pass (``nn.remat``: activations inside a block are recomputed, not stored); same
    outputs and params tree, less memory when training. ``mid_block=False`` removes the mid
    block (diffusers ``mid_block_type=None``; BK-SDM-Small / -v2-Small, Kim et al. 2023, with
    ``layers_per_block=1``).
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20)
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    )
    up_block_types: tuple[str, ...] = (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    )
    cross_attention_dim: int | None = 1024
    time_embedding: bool = True
    norm_num_groups: int | None = 32
    norm_eps: float = 1e-5
    transformer_norm_eps: float = 1e-6
    layer_norm_eps: float = 1e-5
    transformer_layers_per_block: int = 1
    mid_block: bool = True
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    attention_query_chunk: int | None = None
    conv_matmul_max_pixels: int | None = None
    dtype: str = "float32"
    remat: bool = False

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        fix("block_out_channels", tuple(int(c) for c in self.block_out_channels))
        fix("num_attention_heads", as_tuple(self.num_attention_heads, n, "num_attention_heads"))
        fix("down_block_types", as_tuple(self.down_block_types, n, "down_block_types"))
        fix("up_block_types", as_tuple(self.up_block_types, n, "up_block_types"))
        fix("dtype", dtype_name(self.dtype))
        bad = [t for t in self.down_block_types if t not in DOWN_TYPES]
        bad += [t for t in self.up_block_types if t not in UP_TYPES]
        if bad:
            raise UnsupportedConfigError(f"UNetConfig: unsupported block types {bad}")
        for width, heads in zip(self.block_out_channels, self.num_attention_heads):
            if width % heads:
                raise UnsupportedConfigError(
                    f"UNetConfig: width {width} not divisible by {heads} heads"
                )

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        return config_from_dict(cls, data)

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> UNetConfig:
        """Translate a diffusers ``UNet2DConditionModel`` ``config.json`` dict; reject what we lack."""
        check_supported(
            cfg,
            {
                "mid_block_type": ["UNetMidBlock2DCrossAttn", None],
                "act_fn": ["silu"],
                "downsample_padding": [1],
                "use_linear_projection": [True],
                "only_cross_attention": [False],
                "dual_cross_attention": [False],
                "class_embed_type": [None],
                "num_class_embeds": [None],
                "addition_embed_type": [None],
                "encoder_hid_dim": [None],
                "encoder_hid_dim_type": [None],
                "time_embedding_type": ["positional"],
                "time_embedding_act_fn": [None],
                "timestep_post_act": [None],
                "time_cond_proj_dim": [None],
                "conv_in_kernel": [3],
                "conv_out_kernel": [3],
                "resnet_time_scale_shift": ["default"],
                "resnet_skip_time_act": [False],
                "resnet_out_scale_factor": [1, 1.0],
                "mid_block_scale_factor": [1, 1.0],
                "center_input_sample": [False],
                "attention_type": ["default"],
                "reverse_transformer_layers_per_block": [None],
                "class_embeddings_concat": [False],
                "mid_block_only_cross_attention": [None, False],
                "cross_attention_norm": [None],
            },
            "UNet2DConditionModel",
        )
        widths = tuple(cfg.get("block_out_channels", (320, 640, 1280, 1280)))
        n = len(widths)
        heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
        layers = as_tuple(cfg.get("layers_per_block", 2), n, "layers_per_block")
        tlayers = as_tuple(
            cfg.get("transformer_layers_per_block", 1), n, "transformer_layers_per_block"
        )
        cross = cfg.get("cross_attention_dim", 1280)
        if isinstance(cross, list | tuple):
            cross = as_tuple(cross, n, "cross_attention_dim")
        problems = []
        if len(set(layers)) != 1:
            problems.append(f"layers_per_block={list(layers)} (only one value for all blocks)")
        if len(set(tlayers)) != 1 or not isinstance(tlayers[0], int):
            problems.append(f"transformer_layers_per_block={list(tlayers)} (one int only)")
        if isinstance(cross, tuple) and len(set(cross)) != 1:
            problems.append(f"cross_attention_dim={list(cross)} (one value only)")
        ted = cfg.get("time_embedding_dim")
        if ted is not None and ted != 4 * widths[0]:
            problems.append(f"time_embedding_dim={ted} (only 4 x block_out_channels[0])")
        if cfg.get("norm_num_groups", 32) is None:
            problems.append("norm_num_groups=None (diffusers then skips the output norm)")
        if problems:
            raise UnsupportedConfigError("UNet2DConditionModel: unsupported " + "; ".join(problems))
        return cls(
            in_channels=cfg.get("in_channels", 4),
            out_channels=cfg.get("out_channels", 4),
            block_out_channels=widths,
            layers_per_block=layers[0],
            num_attention_heads=as_tuple(heads, n, "num_attention_heads"),
            down_block_types=tuple(cfg.get("down_block_types", cls.down_block_types)),
            up_block_types=tuple(cfg.get("up_block_types", cls.up_block_types)),
            cross_attention_dim=cross[0] if isinstance(cross, tuple) else cross,
            time_embedding=True,
            norm_num_groups=cfg.get("norm_num_groups", 32),
            norm_eps=cfg.get("norm_eps", 1e-5),
            transformer_layers_per_block=tlayers[0],
            mid_block=cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") is not None,
            flip_sin_to_cos=cfg.get("flip_sin_to_cos", True),
            freq_shift=cfg.get("freq_shift", 0),
            dtype=dtype,
        )


class UNetBlock(nn.Module):
    """One down or up block: ResNets, optional transformers after each, optional resampler.

    Down blocks return ``(h, skips)``; up blocks take ``skips`` (the last ``len(resnets)`` down
    outputs, consumed from the end and concatenated as ``[h, skip]``) and return ``h``.
    """

    config: UNetConfig
    out_channels: int
    heads: int
    num_layers: int
    has_attention: bool
    resample: bool
    up: bool

    def _layer(self, i: int, h: jax.Array, temb, context) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        h = ResnetBlock2D(
            self.out_channels,
            cfg.norm_num_groups,
            cfg.norm_eps,
            dtype=dtype,
            conv_matmul_max_pixels=cfg.conv_matmul_max_pixels,
            name=f"resnets_{i}",
        )(h, temb)
        if self.has_attention:
            h = Transformer2D(
                self.heads,
                cfg.transformer_layers_per_block,
                cfg.cross_attention_dim is not None,
                cfg.norm_num_groups,
                cfg.transformer_norm_eps,
                cfg.layer_norm_eps,
                cfg.attention_query_chunk,
                dtype=dtype,
                name=f"attentions_{i}",
            )(h, context)
        return h

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        temb: jax.Array | None,
        context: jax.Array | None,
        skips: Sequence[jax.Array] = (),
        upsample_size: tuple[int, int] | None = None,
    ):
        dtype = jnp.dtype(self.config.dtype)
        mm = self.config.conv_matmul_max_pixels
        if self.up:
            skips = list(skips)
            for i in range(self.num_layers):
                h = jnp.concatenate([h, skips.pop().astype(h.dtype)], axis=-1)
                h = self._layer(i, h, temb, context)
            if self.resample:
                h = Upsample2D(
                    self.out_channels, dtype=dtype, conv_matmul_max_pixels=mm, name="upsamplers_0"
                )(h, upsample_size)
            return h
        outputs = []
        for i in range(self.num_layers):
            h = self._layer(i, h, temb, context)
            outputs.append(h)
        if self.resample:
            h = Downsample2D(
                self.out_channels,
                "unet",
                dtype=dtype,
                conv_matmul_max_pixels=mm,
                name="downsamplers_0",
            )(h)
            outputs.append(h)
        return h, outputs


class MidBlockCrossAttn(nn.Module):
    """``UNetMidBlock2DCrossAttn``: resnets_0 -> attentions_0 -> resnets_1."""

    config: UNetConfig

    @nn.compact
    def __call__(self, h: jax.Array, temb, context) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        width = cfg.block_out_channels[-1]
        res = lambda name: ResnetBlock2D(  # noqa: E731
            width, cfg.norm_num_groups, cfg.norm_eps, dtype, cfg.conv_matmul_max_pixels, name=name
        )
        h = res("resnets_0")(h, temb)
        h = Transformer2D(
            cfg.num_attention_heads[-1],
            cfg.transformer_layers_per_block,
            cfg.cross_attention_dim is not None,
            cfg.norm_num_groups,
            cfg.transformer_norm_eps,
            cfg.layer_norm_eps,
            cfg.attention_query_chunk,
            dtype=dtype,
            name="attentions_0",
        )(h, context)
        return res("resnets_1")(h, temb)


class UNet2D(nn.Module):
    """``UNet2DConditionModel`` forward on NHWC: ``(B, H, W, in) -> (B, H, W, out)``."""

    config: UNetConfig

    @nn.compact
    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array | float | None = None,
        encoder_hidden_states: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        widths = cfg.block_out_channels
        n = len(widths)
        if sample.ndim != 4 or sample.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"UNet2D expects NHWC input with {cfg.in_channels} channels, got {sample.shape}"
            )
        if cfg.cross_attention_dim is not None and encoder_hidden_states is None:
            raise ValueError("UNet2D has cross-attention: pass encoder_hidden_states (B, S, D)")
        context = None
        if cfg.cross_attention_dim is not None:
            context = encoder_hidden_states.astype(dtype)

        temb = None
        if cfg.time_embedding:
            if timesteps is None:
                raise ValueError("UNet2D has a time embedding: pass timesteps")
            t = jnp.broadcast_to(jnp.reshape(jnp.asarray(timesteps), (-1,)), (sample.shape[0],))
            t_emb = timestep_embedding(
                t, widths[0], flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift
            )
            temb = TimestepEmbedding(cfg.time_embed_dim, dtype=dtype, name="time_embedding")(
                t_emb.astype(dtype)
            )

        mm = cfg.conv_matmul_max_pixels
        h = conv(widths[0], 3, dtype=dtype, name="conv_in", matmul_max_pixels=mm)(
            sample.astype(dtype)
        )
        # nn.remat counts ``self`` as argument 0: upsample_size (a shape) is argument 5.
        down_cls = nn.remat(UNetBlock) if cfg.remat else UNetBlock
        up_cls = nn.remat(UNetBlock, static_argnums=(5,)) if cfg.remat else UNetBlock
        mid_cls = nn.remat(MidBlockCrossAttn) if cfg.remat else MidBlockCrossAttn
        skips = [h]
        for i, kind in enumerate(cfg.down_block_types):
            h, outs = down_cls(
                cfg,
                widths[i],
                cfg.num_attention_heads[i],
                cfg.layers_per_block,
                kind == "CrossAttnDownBlock2D",
                resample=i < n - 1,
                up=False,
                name=f"down_blocks_{i}",
            )(h, temb, context)
            skips += outs

        if cfg.mid_block:
            h = mid_cls(cfg, name="mid_block")(h, temb, context)

        for i, kind in enumerate(cfg.up_block_types):
            take = cfg.layers_per_block + 1
            block_skips, skips = skips[-take:], skips[:-take]
            size = tuple(skips[-1].shape[1:3]) if skips else None
            h = up_cls(
                cfg,
                widths[n - 1 - i],
                cfg.num_attention_heads[n - 1 - i],
                take,
                kind == "CrossAttnUpBlock2D",
                resample=i < n - 1,
                up=True,
                name=f"up_blocks_{i}",
            )(h, temb, context, block_skips, size)

        h = GroupNorm(cfg.norm_num_groups, cfg.norm_eps, dtype=dtype, name="conv_norm_out")(h)
        return conv(cfg.out_channels, 3, dtype=dtype, name="conv_out", matmul_max_pixels=mm)(
            nn.silu(h)
        )
