"""The networks stage-2 training starts from (AdcSR ``train.py``), as fp32 numpy param trees.

* SD 2.1-base (diffusers folder): its UNet is pruned into the student (``prune.py``) and is the
  discriminator's base; its VAE gives the real features ``f_R``.
* OSEDiff (the teacher): our converted teacher folder (``adcsr convert osediff``), OSEDiff's own
  ``osediff.pkl`` (PEFT LoRA, merged into SD 2.1-base here) or AdcSR's merged one.
* The half decoder (``halfDecoder.ckpt``, stage 1's output): its ``conv_in`` + ``mid_block`` are
  the frozen stem behind ``f_T`` and ``f_R``, its mid block the student's trainable copy, its up
  blocks / norm / conv_out the student's frozen tail.
* Optionally an AdcSR student to fine-tune (our converted folder or ``net_params_*.pkl``; the
  half decoder then still supplies the stem).

:class:`StudentVariant` selects the Table B.1 ablations (AdcSR supplement): ``unet="bk_small"``
(BK-SDM-v2-Small's block-removed UNet at SD's widths, ``weights.bk_sdm``) and
``decoder="taesd"`` (TAESD's tiny decoder behind a pruned UNet whose conv_out gives SD's 4 latent
channels; no half decoder: stage 2 then distils in SD's latent space, so ``half_stem`` is empty and
the teacher has no half decoder).

:func:`random_stage2_weights` draws the same structure with seeded random weights (tiny configs
for tests and demos, full size for benchmarks), going through the same pruning path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from adcsr_jax.models.adcsr import AdcSRConfig, random_params
from adcsr_jax.models.osediff import OSEDiffConfig
from adcsr_jax.models.taesd import TAESDConfig, abstract_taesd_params
from adcsr_jax.models.unet import UNetConfig
from adcsr_jax.models.vae import VAEConfig
from adcsr_jax.weights.half_decoder import resolve_half_decoder_file
from adcsr_jax.weights.mapping import params_to_torch
from adcsr_jax.weights.networks import (
    decoder_params_from_torch,
    decoder_template,
    unet_params_from_torch,
    unet_template,
    vae_params_from_torch,
    vae_template,
)
from adcsr_jax.weights.prune import (
    prune_unet_state_dict,
    student_config,
    student_init_state_dict,
)

SD_VAE_PARTS = ("encoder", "quant_conv", "post_quant_conv")  # what f_R needs of SD's VAE
HALF_STEM = ("conv_in", "mid_block")


@dataclasses.dataclass
class Stage2Weights:
    """Everything stage 2 starts from (fp32 numpy leaves, Flax param layouts)."""

    student_config: AdcSRConfig
    student: dict[str, Any]  # {'unet', 'mid_block', 'decoder'}
    teacher_config: OSEDiffConfig  # with half_decoder
    teacher: dict[str, Any]  # {'vae', 'unet'}
    half_stem: dict[str, Any]  # {'conv_in', 'mid_block'} of the frozen half decoder
    sd_vae: dict[str, Any]  # {'encoder', 'quant_conv', 'post_quant_conv'}
    sd_unet_config: UNetConfig
    sd_unet: dict[str, Any]  # the discriminator's base


@dataclasses.dataclass(frozen=True)
class StudentVariant:
    """Which student structure stage 2 builds: ``unet`` in ``pruned`` (AdcSR: 75% channels) or
    ``bk_small`` (BK-SDM-v2-Small blocks, full width); ``decoder`` in ``pruned`` (AdcSR's half
    decoder) or ``taesd`` (``taesd`` = its architecture)."""

    unet: str = "pruned"
    decoder: str = "pruned"
    taesd: TAESDConfig = TAESDConfig()

    def __post_init__(self) -> None:
        if self.unet not in ("pruned", "bk_small"):
            raise ValueError(f"student UNet must be 'pruned' or 'bk_small', got {self.unet!r}")
        if self.decoder not in ("pruned", "taesd"):
            raise ValueError(f"student decoder must be 'pruned' or 'taesd', got {self.decoder!r}")
        if self.unet == "bk_small" and self.decoder == "taesd":
            raise ValueError("Table B.1 has no block-removed UNet with the tiny decoder")


DEFAULT_VARIANT = StudentVariant()


def student_variant(model: Any) -> StudentVariant:
    """The variant a stage-2 ``config.model`` names (``unet``, ``decoder``; absent = AdcSR's)."""
    get = model.get if hasattr(model, "get") else lambda k, d=None: getattr(model, k, d)
    taesd = TAESDConfig(
        channels=int(get("taesd_channels", 64)),
        num_blocks=tuple(get("taesd_num_blocks", (3, 3, 3, 1))),
    )
    return StudentVariant(
        unet=str(get("unet", "pruned")), decoder=str(get("decoder", "pruned")), taesd=taesd
    )


def required_files(variant: StudentVariant) -> tuple[str, ...]:
    """The ``config.model`` fields ``source='files'`` needs for ``variant``."""
    last = "taesd_decoder" if variant.decoder == "taesd" else "half_decoder"
    return ("sd21", "osediff", last)


TINY_TAESD = TAESDConfig(channels=16)


def tiny_configs() -> tuple[UNetConfig, VAEConfig, VAEConfig]:
    """(SD UNet, SD VAE, half decoder) configs of the tiny structure (the test networks')."""
    unet = UNetConfig(
        block_out_channels=(32, 64, 128, 128), num_attention_heads=(2, 2, 4, 4),
        cross_attention_dim=32,
    )  # fmt: skip
    vae = VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1)
    return unet, vae, VAEConfig(block_out_channels=(32, 32, 64, 64))


def full_configs() -> tuple[UNetConfig, VAEConfig, VAEConfig]:
    """(SD 2.1-base UNet, SD 2.1-base VAE, AdcSR's half decoder) configs."""
    return UNetConfig(), VAEConfig(), VAEConfig(block_out_channels=(64, 128, 256, 256))


def variant_student_config(
    unet_config: UNetConfig, half_config: VAEConfig | None, variant: StudentVariant
) -> AdcSRConfig:
    """The student's architecture for an SD UNet, a half decoder and a variant (no weights)."""
    ratio = 1.0 if variant.unet == "bk_small" else 0.75
    decoder_widths = half_config.decoder_widths if half_config is not None else (64, 128, 256, 256)
    config = student_config(
        unet_config.block_out_channels,
        unet_config.num_attention_heads,
        ratio,
        decoder_block_out_channels=decoder_widths,
    )
    if variant.unet == "bk_small":
        config = config.replace(layers_per_block=1, unet_mid_block=False)
    if variant.decoder == "taesd":
        t = variant.taesd
        config = config.replace(decoder_type="taesd", latent_channels=t.latent_channels,
                                taesd_channels=t.channels, taesd_num_blocks=t.num_blocks)  # fmt: skip
    return config


def _student_from(
    sd_unet_torch: dict[str, np.ndarray],
    half_torch: dict[str, np.ndarray] | None,
    unet_config: UNetConfig,
    half_config: VAEConfig | None,
    variant: StudentVariant = DEFAULT_VARIANT,
    taesd_params: dict[str, Any] | None = None,
) -> tuple[AdcSRConfig, dict[str, Any]]:
    """AdcSR's init: pruned SD UNet + the half decoder's mid block (trainable) and tail; or a
    Table B.1 variant (BK-SDM-Small blocks at ratio 1.0, or TAESD's decoder behind a UNet with
    a 4-channel conv_out)."""
    from adcsr_jax.weights.adcsr_ckpt import student_params_from_torch

    config = variant_student_config(unet_config, half_config, variant)
    ratio = 1.0 if variant.unet == "bk_small" else 0.75
    if variant.unet == "bk_small":
        from adcsr_jax.weights.bk_sdm import bk_small_state_dict

        sd_unet_torch = bk_small_state_dict(sd_unet_torch)
    if variant.decoder == "taesd":
        if taesd_params is None:
            raise ValueError("the TAESD student needs TAESD decoder params")
        unet = prune_unet_state_dict(sd_unet_torch, ratio, 12, variant.taesd.latent_channels)
        sd = {f"unet.{k}": v for k, v in unet.items()}
        sd.update({f"decoder.{k}": v for k, v in params_to_torch(taesd_params).items()})
        return config, student_params_from_torch(sd, config, source="pruned SD UNet + TAESD")
    sd = student_init_state_dict(sd_unet_torch, half_torch, ratio)
    return config, student_params_from_torch(
        sd, config, source=f"{variant.unet} SD UNet + half decoder"
    )


def _assemble(
    sd_unet_config: UNetConfig,
    sd_unet: dict[str, Any],
    sd_vae: dict[str, Any],
    half_config: VAEConfig,
    half: dict[str, Any],
    teacher_unet: dict[str, Any],
    teacher_vae: dict[str, Any],
    vae_config: VAEConfig,
    student: tuple[AdcSRConfig, dict[str, Any]] | None = None,
    variant: StudentVariant = DEFAULT_VARIANT,
    taesd_params: dict[str, Any] | None = None,
) -> Stage2Weights:
    if student is None:
        student = _student_from(params_to_torch(sd_unet), params_to_torch(half),
                                sd_unet_config, half_config, variant, taesd_params)  # fmt: skip
    latent = student[0].feature_space == "latent"  # no half decoder anywhere (TAESD variant)
    teacher_config = OSEDiffConfig(
        unet=sd_unet_config, vae=vae_config, half_decoder=None if latent else half_config
    )
    return Stage2Weights(
        student_config=student[0],
        student=student[1],
        teacher_config=teacher_config,
        teacher={"vae": teacher_vae, "unet": teacher_unet},
        half_stem={} if latent else {k: half[k] for k in HALF_STEM},
        sd_vae={k: sd_vae[k] for k in SD_VAE_PARTS},
        sd_unet_config=sd_unet_config,
        sd_unet=sd_unet,
    )


def read_half(path: str | Path) -> tuple[VAEConfig, dict[str, Any]]:
    """(config, Flax params) of a ``halfDecoder.ckpt`` (either layout; widths from its keys) or
    of the one a stage-1 workdir holds."""
    from adcsr_jax.weights.adcsr_ckpt import read_half_decoder
    from adcsr_jax.weights.osediff_ckpt import _half_decoder_config

    path = resolve_half_decoder_file(path)
    half_sd = read_half_decoder(path)
    cfg = _half_decoder_config(half_sd)
    return cfg, decoder_params_from_torch(half_sd, cfg, source=str(path))


def random_stage2_weights(
    size: str = "tiny",
    seed: int = 0,
    variant: StudentVariant | None = None,
    *,
    sd_vae: tuple[VAEConfig, dict[str, Any]] | None = None,
    half_decoder: tuple[VAEConfig, dict[str, Any]] | None = None,
) -> Stage2Weights:
    """Seeded random networks of the stage-2 structure (``size``: ``tiny`` or ``full``).

    SD UNet, SD VAE, half decoder, teacher UNet and teacher VAE are drawn independently
    (``models.adcsr.random_params``); the student is pruned from the SD UNet and takes the half
    decoder's mid block and tail, as in AdcSR. ``variant``: a Table B.1 ablation (random TAESD
    decoder, 16 channels at ``tiny``). ``sd_vae`` / ``half_decoder``: (config, params) used
    instead of drawing them, e.g. the VAE a tiny stage 1 ran on and the decoder it trained (the
    teacher's VAE is then drawn with ``sd_vae``'s config).
    """
    variant = variant or DEFAULT_VARIANT
    if size not in ("tiny", "full"):
        raise ValueError(f"stage-2 network size must be 'tiny' or 'full', got {size!r}")
    unet_cfg, vae_cfg, half_cfg = tiny_configs() if size == "tiny" else full_configs()
    np_tree = lambda t: jax.tree.map(np.asarray, t)  # noqa: E731
    sd_unet = np_tree(random_params(unet_template(unet_cfg), seed))
    if sd_vae is not None:
        vae_cfg, sd_vae = sd_vae[0], np_tree(sd_vae[1])
    else:
        sd_vae = np_tree(random_params(vae_template(vae_cfg), seed + 1))
    if half_decoder is not None:
        half_cfg, half = half_decoder[0], np_tree(half_decoder[1])
    else:
        half = np_tree(random_params(decoder_template(half_cfg), seed + 2))
    t_unet = np_tree(random_params(unet_template(unet_cfg), seed + 3))
    t_vae = np_tree(random_params(vae_template(vae_cfg), seed + 4))
    taesd = None
    if variant.decoder == "taesd":
        if size == "tiny" and variant.taesd == TAESDConfig():
            variant = dataclasses.replace(variant, taesd=TINY_TAESD)
        taesd = np_tree(random_params(abstract_taesd_params(variant.taesd), seed + 5))
    return _assemble(unet_cfg, sd_unet, sd_vae, half_cfg, half, t_unet, t_vae, vae_cfg,
                     variant=variant, taesd_params=taesd)  # fmt: skip


def abstract_stage2_weights(
    configs: tuple[UNetConfig, VAEConfig, VAEConfig],
    variant: StudentVariant | None = None,
    student: AdcSRConfig | None = None,
) -> Stage2Weights:
    """:class:`Stage2Weights` of ``jax.ShapeDtypeStruct`` s (fp32, the loaders' dtype) for
    ``configs`` = (SD UNet, SD VAE, half decoder), without reading or drawing any weight: the tree
    :func:`load_stage2_weights` / :func:`random_stage2_weights` return for those architectures.
    ``student``: the student's architecture when it is not the one pruned from ``configs`` (a
    converted AdcSR folder to fine-tune)."""
    from adcsr_jax.models.adcsr import abstract_params
    from adcsr_jax.models.osediff import abstract_params as teacher_params

    variant = variant or DEFAULT_VARIANT
    unet_cfg, vae_cfg, half_cfg = configs
    latent = variant.decoder == "taesd"
    if student is None:
        student = variant_student_config(unet_cfg, None if latent else half_cfg, variant)
    latent = student.feature_space == "latent"
    teacher_config = OSEDiffConfig(
        unet=unet_cfg, vae=vae_cfg, half_decoder=None if latent else half_cfg
    )
    teacher = teacher_params(teacher_config)
    return Stage2Weights(
        student_config=student,
        student=dict(abstract_params(student)),
        teacher_config=teacher_config,
        teacher={"vae": teacher["vae"], "unet": teacher["unet"]},
        half_stem={} if latent else {k: teacher["half_decoder"][k] for k in HALF_STEM},
        sd_vae={k: teacher["vae"][k] for k in SD_VAE_PARTS},
        sd_unet_config=unet_cfg,
        sd_unet=unet_template(unet_cfg),
    )


def stage2_weights_from_torch(
    sd_unet: dict[str, np.ndarray],
    sd_vae: dict[str, np.ndarray],
    half_decoder: dict[str, np.ndarray],
    teacher_unet: dict[str, np.ndarray],
    teacher_vae: dict[str, np.ndarray],
    configs: tuple[UNetConfig, VAEConfig, VAEConfig],
) -> Stage2Weights:
    """Stage-2 weights from diffusers-named state dicts (SD UNet / VAE, half ``Decoder``, merged
    teacher UNet / VAE); ``configs`` = (UNet, VAE, half decoder), e.g. :func:`tiny_configs`."""
    unet_cfg, vae_cfg, half_cfg = configs
    student = _student_from(sd_unet, half_decoder, unet_cfg, half_cfg)
    return _assemble(
        unet_cfg,
        unet_params_from_torch(sd_unet, unet_cfg, source="SD UNet"),
        vae_params_from_torch(sd_vae, vae_cfg, source="SD VAE"),
        half_cfg,
        decoder_params_from_torch(half_decoder, half_cfg, source="half decoder"),
        unet_params_from_torch(teacher_unet, unet_cfg, source="teacher UNet"),
        vae_params_from_torch(teacher_vae, vae_cfg, source="teacher VAE"),
        vae_cfg,
        student,
    )


def _read_student(path: Path, half_decoder: Path, config: AdcSRConfig | None) -> Any:
    from adcsr_jax.weights.adcsr_ckpt import (
        convert_official,
        read_converted_meta,
        read_converted_params,
    )

    if path.is_dir():
        meta = read_converted_meta(path, "adcsr")
        return AdcSRConfig.from_dict(meta["config"]), read_converted_params(path)
    return convert_official(path, half_decoder, config)


def load_stage2_weights(
    sd21: str | Path,
    osediff: str | Path,
    half_decoder: str | Path,
    student: str | Path | None = None,
    variant: StudentVariant | None = None,
    taesd_decoder: str | Path | None = None,
) -> Stage2Weights:
    """Read the stage-2 start (see the module docstring); errors name the file and what is missing.

    ``osediff``: a converted teacher folder, or either ``osediff.pkl`` layout.
    ``student``: ``None`` (prune SD 2.1-base, AdcSR's recipe), a converted AdcSR folder or a
    ``net_params_*.pkl`` (fine-tuning). ``variant`` (Table B.1): ``bk_small`` prunes nothing
    and removes BK-SDM-Small's blocks; ``taesd`` reads ``taesd_decoder`` (TAESD's published
    ``taesd_decoder.pth``, an ``AutoencoderTiny`` file, or stage 1's export) instead of a half
    decoder (``half_decoder`` is then not read).
    """
    variant = variant or DEFAULT_VARIANT
    from adcsr_jax.weights.osediff_ckpt import convert_osediff, read_sd21

    if variant.decoder != "taesd":  # a file or a stage-1 workdir; checked before anything is read
        half_decoder = resolve_half_decoder_file(half_decoder)
    unet_cfg, unet_sd, vae_cfg, vae_sd = read_sd21(sd21)
    taesd = half_sd = half_cfg = half = None
    if variant.decoder == "taesd":
        from adcsr_jax.weights.taesd import load_taesd_decoder

        if not taesd_decoder:
            raise ValueError("the TAESD student needs config.model.taesd_decoder (a file)")
        _, taesd = load_taesd_decoder(taesd_decoder, variant.taesd)
    else:
        half_cfg, half = read_half(half_decoder)
        half_sd = params_to_torch(half)
    osediff = Path(osediff)
    if osediff.is_dir():
        from adcsr_jax.weights.adcsr_ckpt import read_converted_meta, read_converted_params

        meta = read_converted_meta(osediff, "osediff")
        t_cfg = OSEDiffConfig.from_dict(meta["config"])
        t_params = read_converted_params(osediff)
    else:
        t_cfg, t_params = convert_osediff(osediff, sd21, None)
    if t_cfg.unet != unet_cfg or t_cfg.vae.block_out_channels != vae_cfg.block_out_channels:
        raise ValueError(f"{osediff}: the teacher's UNet/VAE configs differ from {sd21}'s")
    if student is None:
        pruned = _student_from(unet_sd, half_sd, unet_cfg, half_cfg, variant, taesd)
    else:
        pruned = _read_student(Path(student), Path(half_decoder), None)
    sd_unet = unet_params_from_torch(unet_sd, unet_cfg, source=f"{sd21}/unet", consume=True)
    sd_vae = vae_params_from_torch(vae_sd, vae_cfg, source=f"{sd21}/vae", consume=True)
    return _assemble(unet_cfg, sd_unet, sd_vae, half_cfg, half, t_params["unet"],
                     t_params["vae"], vae_cfg, pruned)  # fmt: skip


__all__ = [
    "Stage2Weights",
    "abstract_stage2_weights",
    "StudentVariant",
    "full_configs",
    "load_stage2_weights",
    "random_stage2_weights",
    "required_files",
    "student_variant",
    "stage2_weights_from_torch",
    "tiny_configs",
    "variant_student_config",
]
