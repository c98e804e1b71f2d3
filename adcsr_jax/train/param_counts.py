"""Parameter counts of every network a training config builds: ``adcsr plan --params-only``.

From the architectures alone (``jax.eval_shape``): no weight file is read, no random weight is
drawn, nothing is compiled, so a full-size variant is checked against the paper (AdcSR
supplement Table B.1: 457M / 444M / 456M students) before training. Per network and role:

* stage 2: the student (trainable ``unet`` [+ ``mid_block``], frozen decoder tail), the
  discriminator (trainable LoRA / conv_in / all, frozen base), and the frozen teacher UNet and
  VAE, SD's VAE parts behind ``f_R`` and the half-decoder stem behind ``f_T`` / ``f_R``;
* stage 1: the decoder being pretrained and the PatchGAN (trainable), SD's frozen encoder side
  and LPIPS-VGG;
* any other stage: its state's top-level entries (``jax.eval_shape`` of its ``init``).

``model.source = "files"``: SD's UNet / VAE configs come from ``model.sd21``'s ``config.json``
files (SD 2.1-base's architecture while ``model.sd21`` is empty or not on this machine); the half
decoder is AdcSR's (64, 128, 256, 256).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Row = dict[str, Any]


def count(tree: Any) -> int:
    """Scalars in a tree of arrays or ``ShapeDtypeStruct`` s."""
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _row(network: str, role: str, tree_or_n: Any) -> Row:
    n = tree_or_n if isinstance(tree_or_n, int) else count(tree_or_n)
    return {"network": network, "role": role, "params": n}


def sd_configs(model: Any) -> tuple[Any, Any, Any]:
    from adcsr_jax.models.unet import UNetConfig
    from adcsr_jax.models.vae import VAEConfig
    from adcsr_jax.weights import stage2_weights as sw

    """(SD UNet, SD VAE, half decoder) architectures of ``config.model``, reading no weight: the
    ``config.json`` files of ``model.sd21`` when that folder is here, else SD 2.1-base's."""
    if model.source == "random":
        return sw.tiny_configs() if model.size == "tiny" else sw.full_configs()
    if not model.get("sd21") or not Path(model.sd21).is_dir():  # not here: SD 2.1-base's
        return sw.full_configs()
    folder = Path(model.sd21)
    configs = []
    for sub, cls in (("unet", UNetConfig), ("vae", VAEConfig)):
        path = folder / sub / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {sub}/config.json (need the diffusers layout)")
        configs.append(cls.from_diffusers(json.loads(path.read_text())))
    return configs[0], configs[1], sw.full_configs()[2]


def stage2_counts(config: Any) -> list[Row]:
    from adcsr_jax.models.adcsr import abstract_params, split_params
    from adcsr_jax.models.discriminator import DiscriminatorConfig, abstract_discriminator
    from adcsr_jax.models.osediff import OSEDiffConfig
    from adcsr_jax.models.osediff import abstract_params as teacher_params
    from adcsr_jax.models.taesd import TAESDConfig
    from adcsr_jax.weights import stage2_weights as sw

    m = config.model
    variant = sw.student_variant(m)
    unet_cfg, vae_cfg, half_cfg = sd_configs(m)
    if m.source == "random" and m.size == "tiny" and variant.taesd == TAESDConfig():
        variant = dataclasses.replace(variant, taesd=sw.TINY_TAESD)  # random_stage2_weights' rule
    latent = variant.decoder == "taesd"
    student_cfg = sw.variant_student_config(unet_cfg, None if latent else half_cfg, variant)
    trainable, frozen = split_params(abstract_params(student_cfg))
    d = config.disc
    disc_cfg = DiscriminatorConfig(
        unet=unet_cfg,
        feature_channels=student_cfg.feature_channels,
        rank=int(d.rank),
        conv_in=str(d.get("conv_in", "full")),
        finetune=str(d.get("finetune", "lora")),
    )
    disc = abstract_discriminator(disc_cfg)
    teacher = teacher_params(
        OSEDiffConfig(unet=unet_cfg, vae=vae_cfg, half_decoder=None if latent else half_cfg)
    )
    rows = [
        _row("student", "trainable", trainable),
        _row("student", "frozen", frozen),
        _row("discriminator", "trainable", disc["trainable"]),
        _row("discriminator", "frozen", disc["frozen"]),
        _row("teacher unet", "frozen", teacher["unet"]),
        _row("teacher vae", "frozen", teacher["vae"]),
        _row("sd vae (f_R)", "frozen", {k: teacher["vae"][k] for k in sw.SD_VAE_PARTS}),
    ]
    if not latent:
        stem = {k: teacher["half_decoder"][k] for k in sw.HALF_STEM}
        rows.append(_row("half-decoder stem", "frozen", stem))
    return rows


def stage1_counts(config: Any) -> list[Row]:
    from adcsr_jax.train import stage1
    from adcsr_jax.weights.networks import vae_template

    nets = stage1.networks(config)
    sd = vae_template(nets.sd)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    disc = jax.eval_shape(lambda k, a: nets.disc.init(k, a, True), jax.random.key(0), x)["params"]
    cin, lpips = 3, 0
    for cout in stage1.VGG16_CONVS:
        lpips, cin = lpips + 9 * cin * cout + cout, cout
    lpips += sum(stage1.LPIPS_VGG_TAPS)
    name = "tiny decoder (TAESD)" if nets.taesd is not None else "half decoder"
    return [
        _row(name, "trainable", nets.decoder_template()),
        _row("patchgan discriminator", "trainable", disc),
        _row("sd vae encoder side", "frozen", {k: sd[k] for k in ("encoder", "quant_conv",
                                                                  "post_quant_conv")}),
        _row("lpips-vgg", "frozen", lpips),
    ]  # fmt: skip


def generic_counts(config: Any) -> list[Row]:
    from adcsr_jax.train import loop

    stage = loop.load_stage(config.stage)(config, loop.config_mesh(config))
    shapes = loop.abstract_state(stage, config.seed)
    rows = []
    for part, role in (("train", "trainable"), ("frozen", "frozen")):
        for key, tree in shapes[part].items():
            if not str(key).startswith("opt") and key != "step":
                rows.append(_row(str(key), role, tree))
    return rows


def param_counts(config: Any) -> dict[str, Any]:
    """``{"stage", "variant", "networks": [{network, role, params}], "student_total"}``."""
    if config.stage == "stage2":
        rows = stage2_counts(config)
    elif config.stage == "stage1":
        rows = stage1_counts(config)
    else:
        rows = generic_counts(config)
    student = [r["params"] for r in rows if r["network"] == "student"]
    return {
        "stage": str(config.stage),
        "variant": str(config.get("variant", "")),
        "networks": rows,
        "student_total": sum(student) if student else None,
        "trainable": sum(r["params"] for r in rows if r["role"] == "trainable"),
        "frozen": sum(r["params"] for r in rows if r["role"] == "frozen"),
    }


def _m(n: int) -> str:
    return f"{n:>14,d}  ({n / 1e6:8.2f}M)"


def format_counts(result: Mapping[str, Any]) -> str:
    """The text ``adcsr plan --params-only`` prints."""
    head = f"parameters of stage {result['stage']}"
    if result["variant"]:
        head += f", variant {result['variant']}"
    lines = [head + " (from the architectures; no weights read):"]
    for r in result["networks"]:
        lines.append(f"  {r['network']:<24} {r['role']:<10} {_m(r['params'])}")
    if result["student_total"] is not None:
        lines.append(
            f"  {'student total':<35}{_m(result['student_total'])}  (AdcSR Table B.1's #Param.)"
        )
    lines.append(f"  {'all trainable':<35}{_m(result['trainable'])}")
    lines.append(f"  {'all frozen':<35}{_m(result['frozen'])}")
    return "\n".join(lines)


def as_json(result: Mapping[str, Any]) -> str:
    return json.dumps(
        result, indent=2, default=lambda o: int(o) if isinstance(o, np.integer) else str(o)
    )
