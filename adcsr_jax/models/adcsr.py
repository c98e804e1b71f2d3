"""The AdcSR student: LR image -> x4 SR image in one pass (AdcSR ``model.py: Net``, ``test.py``).

Dataflow (NHWC, images in [-1, 1]):

    LR (B,H,W,3) -> PixelUnshuffle(2) (B,H/2,W/2,12) -> pruned UNet (no time embedding, no
    cross-attention) (B,H/2,W/2,256) -> trainable half-decoder mid block = features ``f_S`` ->
    frozen half-decoder tail (up blocks, GroupNorm, SiLU, conv_out) (B,4H,4W,3)
    -> colour fix against the LR input -> [0, 1] and clamp.

Params of :class:`AdcSR`: ``{'unet': ..., 'mid_block': ..., 'decoder': {'up_blocks_0..3',
'conv_norm_out', 'conv_out'}}``. ``unet`` + ``mid_block`` are the trainable ``Net`` of the
reference (446,321,744 params at full size); ``decoder`` is the frozen tail (9,751,939), loaded
from ``halfDecoder.ckpt``. :func:`split_params` / :func:`merge_params` separate the two.

Ablation variants (AdcSR supplement, Table B.1), same front (PixelUnshuffle, no time embedding,
no cross-attention), switched in :class:`AdcSRConfig`:

* ``unet_mid_block=False, layers_per_block=1`` at SD's widths: BK-SDM-v2-Small's block-removed
  UNet (Kim et al. 2023; init from SD by ``weights.bk_sdm``) before the channel-pruned half decoder;
* ``decoder_type="taesd"``: the UNet's conv_out gives a 4-channel *scaled SD latent* and TAESD's
  tiny decoder (``models.taesd``) decodes it. There is no decoder mid block, so ``f_S`` is that
  latent: stage 2 distils in SD's latent space (``feature_space == "latent"``), the only space the
  teacher's output and TAESD share (TAESD is trained to decode SD latents), and D judges latents.
  Params are then ``{'unet'}`` (trainable) and ``{'decoder'}`` (TAESD, frozen in stage 2).

Methods: ``features(lr)`` (``f_S``, used by stage-2 training), ``decode(features)`` (the tail),
``raw(lr)`` (both, before the colour fix; what the tiled inference blends) and ``__call__(lr)``
(the reference's full inference path, output in [0, 1]).
H and W must be multiples of 16 (the UNet's skip concatenations need it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.imageops import adain_colour_fix, to_unit_range
from adcsr_jax.models import abstract_params_of
from adcsr_jax.models.config_utils import config_from_dict, config_to_dict, dtype_name
from adcsr_jax.models.taesd import TAESDConfig, TAESDDecoder
from adcsr_jax.models.unet import UNet2D, UNetConfig
from adcsr_jax.models.vae import Decoder, VAEConfig, VAEMidBlock
from adcsr_jax.nn import pixel_unshuffle

TRAINABLE = ("unet", "mid_block")  # the default (pruned-decoder) student; see trainable_keys
DECODER_TYPES = ("pruned", "taesd")
FROZEN = ("decoder",)
SIZE_MULTIPLE = 16
SCALE = 4


@dataclasses.dataclass(frozen=True)
class AdcSRConfig:
    """Architecture of the student; :meth:`full` is the released model, :meth:`tiny` for tests.

    ``block_out_channels`` / ``num_attention_heads`` are the pruned UNet's (heads are kept by
    pruning, so head_dim = width / heads = 48 at full size); its GroupNorms use AdcSR's group
    rule (24 groups at 240 and 720 channels, 32 elsewhere). The UNet's conv_out feeds the
    half decoder's mid block directly, so its width is ``decoder_block_out_channels[-1]``.
    ``dtype`` is the compute dtype; params stay fp32.
    """

    block_out_channels: tuple[int, ...] = (240, 480, 960, 960)
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20)
    layers_per_block: int = 2
    unshuffle: int = 2
    image_channels: int = 3
    decoder_block_out_channels: tuple[int, ...] = (64, 128, 256, 256)
    decoder_layers_per_block: int = 2
    decoder_norm_num_groups: int = 32
    decoder_norm_eps: float = 1e-6
    dtype: str = "float32"
    # Exact attention a head and this many queries at a time (UNet and decoder mid block):
    # about 2.5x faster attention on XLA:CPU at 4096 tokens; None for export graphs.
    attention_query_chunk: int | None = None
    # Convs whose output map has at most this many pixels, and every 1x1 conv, run as one
    # (im2col) matmul (adcsr_jax.nn.conv): exact, 1.1-3x faster on XLA:CPU; None elsewhere.
    conv_matmul_max_pixels: int | None = None
    # nn.remat on every UNet block and decoder block and the mid block (training memory).
    remat: bool = False
    # Table B.1 ablations (module docstring): False removes the UNet's mid block (BK-SDM).
    unet_mid_block: bool = True
    # "pruned": half decoder (mid block trainable, tail frozen); "taesd": TAESD's tiny decoder.
    decoder_type: str = "pruned"
    latent_channels: int = 4  # taesd: width of f_S (SD's latent)
    taesd_channels: int = 64
    taesd_num_blocks: tuple[int, ...] = (3, 3, 3, 1)

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        fix("block_out_channels", tuple(int(c) for c in self.block_out_channels))
        fix("num_attention_heads", tuple(int(c) for c in self.num_attention_heads))
        fix("decoder_block_out_channels", tuple(int(c) for c in self.decoder_block_out_channels))
        fix("taesd_num_blocks", tuple(int(c) for c in self.taesd_num_blocks))
        fix("dtype", dtype_name(self.dtype))
        if self.decoder_type not in DECODER_TYPES:
            raise ValueError(
                f"AdcSRConfig.decoder_type must be one of {DECODER_TYPES}, got {self.decoder_type!r}"
            )
        if self.decoder_type == "taesd" and len(self.taesd_num_blocks) != 4:
            raise ValueError("AdcSRConfig: the TAESD decoder must upsample x8 (4 stages)")
        if self.unshuffle != 2:
            raise ValueError("AdcSRConfig: only PixelUnshuffle(2) gives the x4 output (x8 decoder)")

    @classmethod
    def full(cls, dtype: Any = "float32") -> AdcSRConfig:
        """The released AdcSR student: 456,073,683 parameters."""
        return cls(dtype=dtype_name(dtype))

    @classmethod
    def tiny(cls, dtype: Any = "float32") -> AdcSRConfig:
        """Same structure at small widths (0.75 x (32, 64, 128, 128)), for tests."""
        return cls(
            block_out_channels=(24, 48, 96, 96),
            num_attention_heads=(2, 2, 4, 4),
            decoder_block_out_channels=(32, 32, 64, 64),
            dtype=dtype_name(dtype),
        )

    def replace(self, **changes: Any) -> AdcSRConfig:
        return dataclasses.replace(self, **changes)

    @property
    def feature_channels(self) -> int:
        """Width of ``f_S`` (UNet conv_out = decoder mid block): 256 at full size; TAESD: 4."""
        if self.decoder_type == "taesd":
            return self.latent_channels
        return self.decoder_block_out_channels[-1]

    @property
    def feature_space(self) -> str:
        """Where stage 2 distils: ``"decoder_mid_block"`` (AdcSR) or ``"latent"`` (TAESD)."""
        return "latent" if self.decoder_type == "taesd" else "decoder_mid_block"

    @property
    def trainable_keys(self) -> tuple[str, ...]:
        """Top-level param keys stage 2 trains (the rest, ``decoder``, stays frozen)."""
        return ("unet",) if self.decoder_type == "taesd" else TRAINABLE

    def taesd_config(self) -> TAESDConfig:
        return TAESDConfig(
            latent_channels=self.latent_channels,
            out_channels=self.image_channels,
            channels=self.taesd_channels,
            num_blocks=self.taesd_num_blocks,
            dtype=self.dtype,
            conv_matmul_max_pixels=self.conv_matmul_max_pixels,
        )

    def unet_config(self) -> UNetConfig:
        return UNetConfig(
            in_channels=self.image_channels * self.unshuffle**2,
            out_channels=self.feature_channels,
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            num_attention_heads=self.num_attention_heads,
            cross_attention_dim=None,
            time_embedding=False,
            norm_num_groups=None,
            mid_block=self.unet_mid_block,
            attention_query_chunk=self.attention_query_chunk,
            conv_matmul_max_pixels=self.conv_matmul_max_pixels,
            dtype=self.dtype,
            remat=self.remat,
        )

    def decoder_config(self) -> VAEConfig:
        return VAEConfig(
            out_channels=self.image_channels,
            block_out_channels=self.decoder_block_out_channels,
            layers_per_block=self.decoder_layers_per_block,
            norm_num_groups=self.decoder_norm_num_groups,
            norm_eps=self.decoder_norm_eps,
            attention_query_chunk=self.attention_query_chunk,
            conv_matmul_max_pixels=self.conv_matmul_max_pixels,
            dtype=self.dtype,
            remat=self.remat,
        )

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdcSRConfig:
        return config_from_dict(cls, data)


def colour_fix(sr: jax.Array, lr: jax.Array) -> jax.Array:
    """AdcSR's colour fix: per image and channel, SR gets the LR's mean and unbiased std."""
    return adain_colour_fix(sr, lr, eps=0.0)


def finish(raw: jax.Array, lr: jax.Array, fix_colour: bool = True) -> jax.Array:
    """Raw network output in [-1, 1] -> final image in [0, 1] (colour fix, then clamp)."""
    raw = raw.astype(jnp.float32)
    out = colour_fix(raw, lr.astype(jnp.float32)) if fix_colour else raw
    return to_unit_range(out)


class AdcSR(nn.Module):
    """The student network; see the module docstring for the dataflow and param layout."""

    config: AdcSRConfig

    def setup(self) -> None:
        cfg = self.config
        dec = cfg.decoder_config()
        self.unet = UNet2D(cfg.unet_config())
        if cfg.decoder_type == "taesd":
            self.decoder = TAESDDecoder(cfg.taesd_config())
            return
        mid_cls = nn.remat(VAEMidBlock) if cfg.remat else VAEMidBlock
        self.mid_block = mid_cls(
            cfg.feature_channels,
            dec.norm_num_groups,
            dec.norm_eps,
            True,
            jnp.dtype(cfg.dtype),
            cfg.attention_query_chunk,
        )
        self.decoder = Decoder(dec)

    def _check(self, lr: jax.Array) -> None:
        if lr.ndim != 4 or lr.shape[-1] != self.config.image_channels:
            raise ValueError(f"AdcSR expects NHWC images (B, H, W, 3), got shape {lr.shape}")
        if lr.shape[1] % SIZE_MULTIPLE or lr.shape[2] % SIZE_MULTIPLE:
            raise ValueError(
                f"AdcSR needs H and W divisible by {SIZE_MULTIPLE}, got {lr.shape[1]}x{lr.shape[2]}"
                " (pad first, e.g. adcsr_jax.tiling.pad_to_multiple)"
            )

    def features(self, lr: jax.Array) -> jax.Array:
        """``f_S``: LR in [-1, 1] (B,H,W,3) -> (B,H/2,W/2,feature_channels)."""
        self._check(lr)
        x = pixel_unshuffle(lr.astype(jnp.dtype(self.config.dtype)), self.config.unshuffle)
        if self.config.decoder_type == "taesd":
            return self.unet(x)
        return self.mid_block(self.unet(x))

    def decode(self, features: jax.Array) -> jax.Array:
        """Frozen tail: features (B,h,w,C) -> image (B,8h,8w,3) in about [-1, 1]."""
        if self.config.decoder_type == "taesd":
            return self.decoder(features)
        return self.decoder.tail(features)

    def raw(self, lr: jax.Array) -> jax.Array:
        """Network output before the colour fix: (B,H,W,3) -> (B,4H,4W,3)."""
        return self.decode(self.features(lr))

    def __call__(self, lr: jax.Array, fix_colour: bool = True) -> jax.Array:
        """The reference inference path: LR in [-1, 1] -> SR in [0, 1] (B,4H,4W,3), fp32."""
        return finish(self.raw(lr), lr, fix_colour)


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable ``{'unet', 'mid_block'}``, frozen ``{'decoder'}``) halves of the student's params.

    The TAESD variant has no ``mid_block``: its trainable half is ``{'unet'}``.
    """
    missing = [k for k in ("unet", *FROZEN) if k not in params]
    if missing:
        raise KeyError(f"AdcSR params lack {missing}; got top-level keys {sorted(params)}")
    trainable = [k for k in TRAINABLE if k in params]
    return {k: params[k] for k in trainable}, {k: params[k] for k in FROZEN}


def merge_params(trainable: Mapping[str, Any], frozen: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`split_params`."""
    return {**trainable, **frozen}


def abstract_params(config: AdcSRConfig, lr_size: int = 32) -> Any:
    """Shape-only params tree of the student (``jax.eval_shape``; nothing is allocated)."""
    x = jax.ShapeDtypeStruct((1, lr_size, lr_size, config.image_channels), jnp.float32)
    return abstract_params_of(AdcSR(config), x)


def random_params(template: Any, seed: int = 0) -> Any:
    """Random fp32 params shaped like an abstract ``template`` (filled on the host with numpy).

    Kernels ~ N(0, 1/fan_in) (variance-preserving), biases ~ N(0, 0.02), norm scales
    1 + N(0, 0.02). Compiling Flax's ``init`` for these networks takes minutes on a CPU, while
    the shapes alone are instant.
    """
    rng = np.random.default_rng(seed)

    def fill(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> jax.Array:
        name = getattr(path[-1], "key", str(path[-1]))
        shape = leaf.shape
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(fan_in))
        elif name == "scale":
            value = 1.0 + 0.02 * rng.standard_normal(shape, np.float32)
        else:
            value = 0.02 * rng.standard_normal(shape, np.float32)
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, template)


def init_student(config: AdcSRConfig, seed: int = 0) -> tuple[AdcSR, dict[str, Any]]:
    """The module and random fp32 params (see :func:`random_params`)."""
    return AdcSR(config), random_params(abstract_params(config), seed)


def count_params(tree: Any) -> int:
    """Number of scalars in a params tree."""
    return sum(int(x.size) for x in jax.tree.leaves(tree))
