"""Flax building blocks with PyTorch-exact numerics; parameter names mirror diffusers' modules.

A diffusers module path ``a.b.0.c`` becomes the Flax path ``a/b_0/c`` (numeric indices join the
preceding name), so loading a checkpoint is a rename plus a layout transpose (conv OIHW -> HWIO,
Linear (out, in) -> (in, out), norm ``weight`` -> ``scale``). Logical axis names: ``axes.py``.
"""

from adcsr_jax.nn.attention import Attention, multi_head_attention
from adcsr_jax.nn.axes import CONV_KERNEL, conv, dense
from adcsr_jax.nn.embeddings import TimestepEmbedding, timestep_embedding
from adcsr_jax.nn.norm import GROUP_CHOICES, GroupNorm, LayerNorm, group_count
from adcsr_jax.nn.resample import (
    Downsample2D,
    PixelUnshuffle,
    Upsample2D,
    pixel_shuffle,
    pixel_unshuffle,
    upsample_nearest,
)
from adcsr_jax.nn.resnet import ResnetBlock2D
from adcsr_jax.nn.transformer import GEGLU, BasicTransformerBlock, FeedForward, Transformer2D

__all__ = [
    "CONV_KERNEL",
    "GEGLU",
    "GROUP_CHOICES",
    "Attention",
    "BasicTransformerBlock",
    "Downsample2D",
    "FeedForward",
    "GroupNorm",
    "LayerNorm",
    "PixelUnshuffle",
    "ResnetBlock2D",
    "TimestepEmbedding",
    "Transformer2D",
    "Upsample2D",
    "conv",
    "dense",
    "group_count",
    "multi_head_attention",
    "pixel_shuffle",
    "pixel_unshuffle",
    "timestep_embedding",
    "upsample_nearest",
]
