"""The AdcSR supplement's ablations (Tables B.1 and B.2), one named variant per row.

Command (each variant also has a ``_tiny`` form: random networks of the same structure and the
bundled sample photos, a smoke run on one CPU)::

    adcsr train --config configs/ablations.py:VARIANT --workdir DIR
    adcsr train --config configs/ablations.py:bksdm_tiny --workdir /tmp/bksdm_tiny
    adcsr plan  --config configs/ablations.py:bksdm --params-only   # Table B.1's #Param. first

Every variant is ``configs/stage2.py``'s (or, for ``*_stage1``, ``configs/stage1.py``'s) config
with the switches below; overrides (``--config.model.sd21=...``) work as there. ``config.variant``
names the row, so the run's hparams and evaluation report carry it.

Table B.1 (structural compression; DRealSR; the paper's LPIPS / DISTS / #Param. (M) / Time (s)):

* ``bksdm`` (row 1, "Block-Removed / Channel-Pruned": 0.3129 / 0.2284 / 457 / 0.03):
  ``model.unet = "bk_small"``: BK-SDM-v2-Small's blocks removed from SD 2.1-base at full width
  (``weights.bk_sdm``), AdcSR's front, the channel-pruned half decoder. 456,651,523 params here.
  Stage 1 is AdcSR's (``bksdm_stage1`` = ``configs/stage1.py``).
* ``taesd`` (row 2, "Channel-Pruned / Tiny VAE Dec.": 0.3343 / 0.2361 / 444 / 0.02):
  ``model.decoder = "taesd"``: the pruned UNet's conv_out gives SD's 4 scaled latent channels and
  TAESD's decoder (``models.taesd``) decodes them. 444,373,655 params here. **Feature space:** the
  distillation and D work in SD's scaled latent space (``f_S`` = the student UNet's output,
  ``f_T`` = OSEDiff's z0, ``f_R`` = 0.18215 x SD's VAE mean of the HR; D's conv_in then has SD's
  4 inputs): TAESD has no mid-block feature, and the latent is the one space the teacher's output
  and TAESD's input share (TAESD is trained to decode SD latents). ``taesd_stage1`` first trains
  the decoder as stage 1 trains the half decoder (from TAESD's published ``taesd_decoder.pth``:
  ``--config.model.decoder_init=checkpoint --config.model.decoder_checkpoint=taesd_decoder.pth``,
  or ``scratch``); stage 2 reads its ``taesd_decoder.safetensors`` as ``model.taesd_decoder``.
* ``chpruned`` (row 3, ours: 0.3046 / 0.2200 / 456 / 0.03): ``configs/stage2.py`` unchanged
  (456,073,683 params); ``chpruned_stage1`` = ``configs/stage1.py``.

Measured (``flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_ablations.py``; random
full-size weights, LR 128 -> SR 512, batch 1, fp32, XLA:CPU on a shared 2-core machine, median of
3 after 1 warm-up; FLOPs from XLA's cost analysis): ``bksdm`` 456.65M params, 1056 GFLOP, 10.9 s;
``taesd`` 444.37M, 521 GFLOP, 4.4 s; ``chpruned`` 456.07M, 1006 GFLOP, 7.7 s (peak RSS 2.7-3.0
GB each). The tiny decoder is fastest, as in the paper; the block-removed UNet has about the
pruned one's FLOPs but is slower here (not profiled; its wider layers, 320-1280 channels
against 240-960, are fewer but each larger); the paper's GPU times are 0.03 / 0.02 / 0.03 s.

Table B.2 (discriminator finetuning; RealSR; the paper's DISTS / FID / MUSIQ / CLIPIQA); the
student is AdcSR's, stage 1 is ``configs/stage1.py``:

* ``disc_full_ft`` (row 1, "Fully Finetuning the Discriminator": no convergence): every D param
  trains (``disc.finetune = "full"``, no adapters). It runs; the loop's NaN guard
  (``guard/skipped``, ``max_nonfinite_in_a_row``) and the logged ``loss/d``, ``d/logit_*`` and
  ``grad_norm/d`` show what happens.
* ``lora_r2`` (row 2: 0.2182 / 121.76 / 62.27 / 0.6056), ``lora_r4`` (row 3: 0.2171 / 119.67 /
  68.85 / 0.6195), ``lora_r8`` (row 4: 0.2182 / 120.94 / 68.76 / 0.6114), ``lora_r16`` (row 5:
  0.2191 / 120.33 / 68.72 / 0.6173): rank-r LoRA with conv_in LoRA-only (``disc.conv_in =
  "lora"``: conv_in's base frozen).
* ``lora_r4_conv_in`` (row 6, ours: 0.2129 / 118.41 / 69.90 / 0.6731): rank 4, conv_in fully
  finetuned besides its adapter (``configs/stage2.py``'s default).

Hardware, time and memory are ``configs/stage2.py``'s (``configs/stage1.py``'s for
``*_stage1``): the full variants need the paper's 8-GPU setup; the ``_tiny`` forms run on one CPU
(the stage-2 step compiles for minutes on a 2-core machine; not timed here on an idle machine).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

B1 = ("bksdm", "taesd", "chpruned")
B2 = ("disc_full_ft", "lora_r2", "lora_r4", "lora_r8", "lora_r16", "lora_r4_conv_in")
STAGE1 = tuple(f"{v}_stage1" for v in B1)
VARIANTS = (*B1, *B2, *STAGE1)
TINY_TAESD_CHANNELS = 16  # the tiny forms' TAESD width (TAESD's own: 64)


def _base(name: str, arg: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the sibling ``configs/<name>.py``."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_adcsr_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _stage1(row: str, tiny: bool) -> ml_collections.ConfigDict:
    c = _base("stage1", "tiny" if tiny else "full")
    c.model.decoder = "pruned"
    if row == "taesd":
        c.model.decoder = "taesd"
        c.model.decoder_init = "scratch" if tiny else "checkpoint"  # TAESD's taesd_decoder.pth
        c.model.taesd_channels = TINY_TAESD_CHANNELS if tiny else 64
        c.model.taesd_num_blocks = (3, 3, 3, 1)
    return c


def _stage2(row: str, tiny: bool) -> ml_collections.ConfigDict:
    c = _base("stage2", "tiny" if tiny else "full")
    c.model.unet = "pruned"
    c.model.decoder = "pruned"
    c.disc.conv_in = "full"
    c.disc.finetune = "lora"
    if row == "bksdm":
        c.model.unet = "bk_small"
        c.export.official = False  # AdcSR's net_params layout is the channel-pruned UNet's
    elif row == "taesd":
        c.model.decoder = "taesd"
        c.model.taesd_decoder = ""  # stage 1's taesd_decoder.safetensors (or TAESD's .pth)
        c.model.taesd_channels = TINY_TAESD_CHANNELS if tiny else 64
        c.model.taesd_num_blocks = (3, 3, 3, 1)
        c.export.official = False
    elif row == "disc_full_ft":
        c.disc.finetune = "full"
        c.export.disc_peft = False  # no adapters to write
    elif row.startswith("lora_r"):
        rank, _, rest = row.removeprefix("lora_r").partition("_")
        c.disc.rank = int(rank)
        c.disc.conv_in = "full" if rest == "conv_in" else "lora"
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``VARIANT`` or ``VARIANT_tiny`` (see the module docstring for the rows)."""
    name = arg or ""
    tiny = name.endswith("_tiny")
    variant = name.removesuffix("_tiny")
    if variant not in VARIANTS:
        raise ValueError(
            f"configs/ablations.py: variant must be one of {', '.join(VARIANTS)} (each also as "
            f"<name>_tiny), got {arg!r}"
        )
    if variant in STAGE1:
        c = _stage1(variant.removesuffix("_stage1"), tiny)
    else:
        c = _stage2(variant, tiny)
    c.variant = name
    c.ablation = variant
    return c
