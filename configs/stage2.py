"""Stage 2 of AdcSR (adversarial distillation of OSEDiff), AdcSR ``train.py`` + paper Sec. 4.

Command::

    adcsr train --config configs/stage2.py:tiny --workdir /tmp/stage2_tiny [--config.x=y ...]
    adcsr train --config configs/stage2.py:full --workdir /shared/runs/adcsr_stage2 \\
        --config.data.source=/data/LSDIR/HR --config.model.sd21=/ckpt/sd21-base \\
        --config.model.osediff=/ckpt/osediff_teacher --config.model.half_decoder=/ckpt/halfDecoder.ckpt

Variants:

* ``tiny``: seeded random networks of the real structure (SD UNet widths 32-128 pruned to 24-96,
  half decoder 32-64, D = that SD UNet + rank-4 LoRA), the bundled sample photos
  (``adcsr_jax.data.sample_set``) through the ``adcsr`` degradation at 64-pixel HR crops
  (16-pixel LR), batch 2, 200 steps. Hardware: one CPU. Time: not yet measured on an idle
  machine; XLA:CPU compiles the step for minutes (over 50 min on a 2-core box shared by five
  jobs), after which a step is short. Memory: a few GB. Result: ``loss/distill`` falls (random
  teacher, so the images are not meaningful).
* ``full``: the paper: global batch 96 (AdcSR: 8 GPUs x 12), 512 HR crops (128 LR), 200k steps,
  Adam 1e-4 halved at 100k (``train.py``'s MultiStepLR at epoch 100 of 200), D Adam 1e-6,
  lambda_adv 1. Needs SD 2.1-base (diffusers folder), the OSEDiff teacher (converted folder or
  ``osediff.pkl``), stage 1's half decoder and an LSDIR-style HR folder. Hardware: the
  paper trained on 8 GPUs (``train.py``: DDP, batch 12 each); on TPU pods / GPU clusters use bf16
  (``--config.compute_dtype=bfloat16``), ``remat`` and ``grad_accum`` as memory needs. Memory:
  ~7.5 GB of frozen fp32 weights (teacher UNet 3.5 + D base 3.5 + the two VAE parts 0.5) +
  1.8 GB trainable (446M) + 3.6 GB Adam, before activations; sharded FSDP-style by ``sharding.rules``. Expected result: the released AdcSR
  (paper Table 1); with a fixed prompt instead of DAPE's tags, not yet measured.

``model.half_decoder``: a ``halfDecoder.ckpt`` (AdcSR's layout or latent-diffusion's) or a
stage-1 workdir (``configs/stage1.py``), which resolves to the ``halfDecoder.ckpt`` stage 1
exported there (``adcsr_jax.weights.half_decoder.resolve_half_decoder_file``; an error names the
file looked for and what the folder holds).

Fields: ``model`` (where the networks come from), ``prompt`` (the fixed embedding; ``source``
stays a switch for the prompt-path issue), ``disc``, ``optim``, ``loss``, ``compute_dtype``,
``remat``, ``grad_accum``, ``eval`` (held-out paired folders), ``export``; the engine's fields
(``total_steps``, ``log``, ``checkpoint``, ``mesh``, ``sharding``, ``data``, ``eval.every_steps``)
are set in :func:`engine_fields`.
"""

from __future__ import annotations

import ml_collections


def engine_fields(config: ml_collections.ConfigDict, variant: str) -> None:
    """The loop's fields (``adcsr_jax/train/config.py: base_config`` names): steps, intervals,
    mesh, sharding rules, input pipeline."""
    tiny = variant == "tiny"
    config.seed = 0
    config.total_steps = 200 if tiny else 200_000
    config.log = ml_collections.ConfigDict({"every_steps": 10 if tiny else 100})
    config.checkpoint = ml_collections.ConfigDict(
        {"every_steps": 100 if tiny else 2_000, "keep_last": 2, "keep_every": 0 if tiny else 50_000}
    )
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    # (logical axis, mesh axes) pairs (adcsr_jax.nn.axes vocabulary); empty = replicate all.
    config.sharding = ml_collections.ConfigDict(
        {"rules": () if tiny else (("conv_out", "fsdp"), ("embed", "fsdp"), ("mlp", "fsdp"))}
    )
    config.data = ml_collections.ConfigDict(
        {
            # "sample" (bundled photos), an HR folder, "tfds:DIR", or "paired:LR_DIR:HR_DIR"
            "source": "sample" if tiny else "",
            "batch_size": 2 if tiny else 96,
            "crop": 64 if tiny else 512,
            "degradation": "adcsr",
            "pool_size": 8 if tiny else -1,  # -1: the preset's (1200)
        }
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``tiny`` (the default) or ``full`` (see the module docstring)."""
    arg = arg or "tiny"
    if arg not in ("tiny", "full"):
        raise ValueError(f"configs/stage2.py: variant must be 'tiny' or 'full', got {arg!r}")
    tiny = arg == "tiny"
    config = ml_collections.ConfigDict()
    config.stage = "stage2"
    config.variant = arg
    engine_fields(config, arg)
    config.model = ml_collections.ConfigDict(
        {
            "source": "random" if tiny else "files",  # 'random' (seeded) or 'files'
            "size": "tiny" if tiny else "full",  # random networks only
            "seed": 0,
            "sd21": "",  # diffusers SD 2.1-base folder (unet/, vae/)
            "osediff": "",  # converted teacher folder, or osediff.pkl (either layout)
            "half_decoder": "",  # stage 1's halfDecoder.ckpt
            "student": "",  # optional: AdcSR folder or net_params_*.pkl to fine-tune
        }
    )
    config.prompt = ml_collections.ConfigDict(
        {"source": "fixed", "embedding": "", "length": 77, "seed": 0}  # embedding: (77, D) .npy
    )
    config.disc = ml_collections.ConfigDict({"rank": 4})
    config.optim = ml_collections.ConfigDict(
        {
            "lr_g": 1e-4,
            "lr_d": 1e-6,
            "milestones": (100_000,),
            "gamma": 0.5,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
        }
    )
    config.loss = ml_collections.ConfigDict({"lambda_adv": 1.0})
    config.compute_dtype = "float32" if tiny else "bfloat16"
    config.remat = not tiny
    config.grad_accum = 1
    # Exact CPU fast paths (chunked attention, im2col-matmul convs on small maps); 0 = off.
    config.attention_query_chunk = 0
    config.conv_matmul_max_pixels = 0
    config.eval = ml_collections.ConfigDict(
        {
            "every_steps": 100 if tiny else 5_000,  # 0: never (the loop's field)
            "lr_dir": "",
            "hr_dir": "",
            "metrics": ("psnr", "lpips", "dists"),
            "limit": 0,  # 0 = every pair
            "num_grids": 4,
            "weights_dir": "",  # metric weights cache (adcsr convert metrics)
        }
    )
    config.export = ml_collections.ConfigDict({"official": True, "disc_peft": True})
    return config
