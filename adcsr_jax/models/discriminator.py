"""AdcSR's discriminator: a copy of the SD 2.1-base UNet on 256-channel decoder features, with LoRA.

As AdcSR ``train.py`` builds it (``unet_D``): SD's UNet, ``conv_in`` replaced by a conv
``feature_channels -> block_out_channels[0]`` (256 -> 320) whose weight is SD's conv_in weight
tiled ``feature_channels / in_channels`` (= 64) times over the input channels and divided by that
factor, bias copied; then the three rank-4 PEFT adapters of AdcSR ``utils.add_lora_to_unet``
(:func:`unet_lora_specs`; the new conv_in gets one too). It is called at ``t = 999`` with the
prompt embeddings and no noise; the logits are the raw UNet output map ``(B, H, W, 4)``.

Trainable (``train.py``: every param named ``lora`` or ``conv_in``): every LoRA ``A`` / ``B`` plus
conv_in's weight and bias. At full size that is **4,802,384** parameters (4.80M): 4,054,288 in
the adapters of the 257 other layers, 10,496 in conv_in's adapter (A 4x256x3x3 = 9,216,
B 320x4x1x1 = 1,280) and 737,600 in conv_in's weight (320x256x3x3) and bias. (OSEDiff's
4,055,712 UNet LoRA params are the same 4,054,288 plus its 4-channel conv_in adapter, 1,424.)

State: ``{"trainable": {"unet": {"conv_in": {kernel, bias}}, "lora": {adapter: {path: {lora_A,
lora_B}}}}, "frozen": {"unet": every other UNet param}}``; :func:`discriminator_logits` overlays
``trainable["unet"]`` on ``frozen["unet"]``. Options for the ablations (AdcSR Table B.2):
any ``rank`` / ``alpha``; ``conv_in="lora"`` (conv_in's base frozen, only its adapter trains);
``finetune="full"`` (no adapters, every UNet param trains, ``frozen["unet"]`` empty).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from adcsr_jax.models import abstract_params, init_params, logical_axes
from adcsr_jax.models.unet import UNet2D, UNetConfig
from adcsr_jax.nn.lora import (
    PEFT_DEFAULT_ALPHA,
    LoraSpec,
    apply_with_lora,
    init_lora,
    lora_logical_axes,
)

# AdcSR utils.add_lora_to_unet: substrings of torch param names, here on our paths ("." -> "/",
# list indices "_<i>"); biases and norms are excluded there, our kernels are never either.
UNET_LORA_PATTERN = (
    r"(to_k|to_q|to_v|to_out_0|conv|conv1|conv2|conv_shortcut|conv_out|proj_out|proj_in"
    r"|ff/net_2|ff/net_0/proj)"
)
_ENCODER = r"down_blocks|conv_in"
_DECODER = r"up_blocks|conv_out"
_NOT_WEIGHTS = (r"bias", r"norm")
ADAPTERS = ("default_encoder", "default_decoder", "default_others")


def unet_lora_specs(rank: int = 4, alpha: float = PEFT_DEFAULT_ALPHA) -> tuple[LoraSpec, ...]:
    """AdcSR ``utils.add_lora_to_unet`` (= OSEDiff's ``initialize_unet``) on our UNet paths.

    Targets: every attention q/k/v/out, proj_in/proj_out, FF in/out and every conv; not the time
    embedding or ``time_emb_proj``. ``default_encoder``: paths with ``down_blocks`` or
    ``conv_in``; ``default_decoder``: the rest with ``up_blocks`` or ``conv_out``;
    ``default_others``: everything else (mid block).
    """
    return (
        LoraSpec(ADAPTERS[0], rank, alpha, (rf"^(?=.*({_ENCODER})).*{UNET_LORA_PATTERN}",),
                 _NOT_WEIGHTS),
        LoraSpec(ADAPTERS[1], rank, alpha, (rf"^(?=.*({_DECODER})).*{UNET_LORA_PATTERN}",),
                 (*_NOT_WEIGHTS, _ENCODER)),
        LoraSpec(ADAPTERS[2], rank, alpha, (UNET_LORA_PATTERN,),
                 (*_NOT_WEIGHTS, _ENCODER, _DECODER)),
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """The discriminator; defaults are AdcSR's (SD 2.1-base UNet, 256 feature channels, r = 4).

    ``unet``: the SD UNet it copies (``in_channels`` = SD's 4). ``feature_channels``: channels of
    the decoder features it judges (a multiple of ``unet.in_channels``). ``conv_in``: ``"full"``
    (official: conv_in's weight and bias train besides its adapter) or ``"lora"``. ``finetune``:
    ``"lora"`` (official) or ``"full"`` (every param trains, no adapters). ``timestep``: 999.
    """

    unet: UNetConfig = UNetConfig()
    feature_channels: int = 256
    rank: int = 4
    alpha: float = PEFT_DEFAULT_ALPHA
    conv_in: str = "full"
    finetune: str = "lora"
    timestep: int = 999

    def __post_init__(self) -> None:
        if self.conv_in not in ("full", "lora"):
            raise ValueError(
                f"DiscriminatorConfig.conv_in must be 'full' or 'lora', got {self.conv_in!r}"
            )
        if self.finetune not in ("lora", "full"):
            raise ValueError(
                f"DiscriminatorConfig.finetune must be 'lora' or 'full', got {self.finetune!r}"
            )
        if self.feature_channels % self.unet.in_channels:
            raise ValueError(
                f"DiscriminatorConfig.feature_channels={self.feature_channels} is not a multiple of "
                f"the UNet's in_channels={self.unet.in_channels} (conv_in is tiled over inputs)"
            )
        if self.unet.cross_attention_dim is None or not self.unet.time_embedding:
            raise ValueError("DiscriminatorConfig.unet must be an SD UNet (time + cross-attention)")

    @property
    def d_unet(self) -> UNetConfig:
        """The discriminator's UNet: ``unet`` with ``in_channels = feature_channels``."""
        return dataclasses.replace(self.unet, in_channels=self.feature_channels)

    @property
    def tile_factor(self) -> int:
        return self.feature_channels // self.unet.in_channels

    @property
    def specs(self) -> tuple[LoraSpec, ...]:
        """The adapters (none when ``finetune == "full"``)."""
        return () if self.finetune == "full" else unet_lora_specs(self.rank, self.alpha)


def _example_inputs(cfg: UNetConfig) -> tuple[jax.ShapeDtypeStruct, ...]:
    size = 2 ** (len(cfg.block_out_channels) - 1)
    return (
        jax.ShapeDtypeStruct((1, size, size, cfg.in_channels), jnp.float32),
        jax.ShapeDtypeStruct((1,), jnp.float32),
        jax.ShapeDtypeStruct((1, 1, cfg.cross_attention_dim), jnp.float32),
    )


def tiled_conv_in(kernel: Any, factor: int) -> jax.Array:
    """AdcSR ``weight.repeat(1, factor, 1, 1) / factor`` in HWIO: input channel j reads j % in."""
    return jnp.tile(jnp.asarray(kernel, jnp.float32), (1, 1, factor, 1)) / factor


def _check_sd(config: DiscriminatorConfig, params: Mapping[str, Any]) -> None:
    want = jax.tree.map(lambda s: tuple(s.shape), abstract_params(UNet2D(config.unet),
                                                                  *_example_inputs(config.unet)))  # fmt: skip
    got = jax.tree.map(lambda a: tuple(np.shape(a)), dict(params))
    flat_w, flat_g = traverse_util.flatten_dict(want), traverse_util.flatten_dict(got)
    bad = [f"{'/'.join(k)}: {flat_g.get(k, 'missing')} (expected {v})"
           for k, v in flat_w.items() if flat_g.get(k) != v]  # fmt: skip
    bad += [f"{'/'.join(k)}: unexpected" for k in flat_g if k not in flat_w]
    if bad:
        raise ValueError(
            f"SD UNet params do not fit DiscriminatorConfig.unet ({len(bad)} problem(s)): "
            + "; ".join(bad[:5])
        )


def init_discriminator(
    config: DiscriminatorConfig, sd_unet_params: Mapping[str, Any] | None, rng: jax.Array
) -> dict[str, Any]:
    """``{"trainable", "frozen"}`` from SD UNet params (random ones when ``None``, tiny configs).

    conv_in is rebuilt by the tiling rule; adapters get PEFT's gaussian init. Leaves of
    ``sd_unet_params`` are passed through (numpy stays numpy, nothing is copied).
    """
    k_sd, k_lora = jax.random.split(rng)
    if sd_unet_params is None:
        sd_unet_params = init_params(UNet2D(config.unet), k_sd, *(
            jnp.zeros(s.shape, s.dtype) for s in _example_inputs(config.unet)))  # fmt: skip
    else:
        _check_sd(config, sd_unet_params)
    base = dict(sd_unet_params)
    base["conv_in"] = {
        "kernel": tiled_conv_in(base["conv_in"]["kernel"], config.tile_factor),
        "bias": jnp.asarray(base["conv_in"]["bias"], jnp.float32),
    }
    specs = config.specs
    lora = init_lora(specs, base, k_lora) if specs else {}
    if config.finetune == "full":
        return {"trainable": {"unet": base, "lora": lora}, "frozen": {"unet": {}}}
    if config.conv_in == "full":
        conv_in = base.pop("conv_in")
        return {"trainable": {"unet": {"conv_in": conv_in}, "lora": lora},
                "frozen": {"unet": base}}  # fmt: skip
    return {"trainable": {"unet": {}, "lora": lora}, "frozen": {"unet": base}}


def _overlay(frozen: Mapping[str, Any], trainable: Mapping[str, Any]) -> dict[str, Any]:
    flat = dict(traverse_util.flatten_dict(dict(frozen)))
    flat.update(traverse_util.flatten_dict(dict(trainable)))
    return traverse_util.unflatten_dict(flat)


def discriminator_unet_params(trainable: Mapping[str, Any], frozen: Mapping[str, Any]) -> Any:
    """The whole UNet param tree (without adapters) of a discriminator state."""
    return _overlay(frozen["unet"], trainable["unet"])


def discriminator_logits(
    config: DiscriminatorConfig,
    trainable: Mapping[str, Any],
    frozen: Mapping[str, Any],
    features_nhwc: jax.Array,
    text_emb: jax.Array,
) -> jax.Array:
    """Logits ``(B, H, W, out_channels)`` of features ``(B, H, W, feature_channels)``.

    ``text_emb``: ``(B, S, D)`` or ``(1, S, D)`` (one prompt for the batch). Pure and jittable;
    differentiable w.r.t. ``trainable`` and ``features_nhwc``.
    """
    if features_nhwc.ndim != 4 or features_nhwc.shape[-1] != config.feature_channels:
        raise ValueError(
            f"discriminator expects NHWC features with {config.feature_channels} channels, "
            f"got {features_nhwc.shape}"
        )
    b = features_nhwc.shape[0]
    if text_emb.ndim != 3 or text_emb.shape[0] not in (1, b):
        raise ValueError(f"text_emb must be (B={b} or 1, S, D), got {text_emb.shape}")
    text_emb = jnp.broadcast_to(text_emb, (b, *text_emb.shape[1:]))
    t = jnp.full((b,), config.timestep, jnp.float32)
    params = discriminator_unet_params(trainable, frozen)
    return apply_with_lora(
        UNet2D(config.d_unet), params, trainable["lora"], config.specs, features_nhwc, t, text_emb
    )


def abstract_discriminator(config: DiscriminatorConfig) -> dict[str, Any]:
    """``jax.ShapeDtypeStruct`` tree of :func:`init_discriminator`'s result (no allocation)."""
    return jax.eval_shape(lambda k: init_discriminator(config, None, k), jax.random.key(0))


def count_trainable(config: DiscriminatorConfig) -> int:
    """Number of trainable parameters (4,802,384 for the default config), via ``eval_shape``."""
    leaves = jax.tree.leaves(abstract_discriminator(config)["trainable"])
    return int(sum(np.prod(x.shape) for x in leaves))


def discriminator_logical_axes(config: DiscriminatorConfig) -> dict[str, Any]:
    """Logical ``PartitionSpec`` tree shaped like the discriminator state (for sharding rules)."""
    unet_axes = logical_axes(UNet2D(config.d_unet), *_example_inputs(config.d_unet))
    state = abstract_discriminator(config)
    flat_axes = traverse_util.flatten_dict(unet_axes)

    def pick(tree: Mapping[str, Any]) -> Any:
        keys = traverse_util.flatten_dict(dict(tree))
        return traverse_util.unflatten_dict({k: flat_axes[k] for k in keys}) if keys else {}

    return {
        "trainable": {
            "unet": pick(state["trainable"]["unet"]),
            "lora": lora_logical_axes(state["trainable"]["lora"], unet_axes),
        },
        "frozen": {"unet": pick(state["frozen"]["unet"])},
    }
