"""Stage 2 of AdcSR (adversarial distillation of OSEDiff), AdcSR ``train.py`` + paper Sec. 4.

Command::

    adcsr train --config configs/stage2.py:tiny --workdir /tmp/stage2_tiny [--config.x=y ...]
    adcsr train --config configs/stage2.py:full --workdir /shared/runs/adcsr_stage2 \\
        --config.data.source=/data/LSDIR/HR --config.model.sd21=/ckpt/sd21-base \\
        --config.model.osediff=/ckpt/osediff_teacher --config.model.half_decoder=/ckpt/halfDecoder.ckpt \\
        --config.prompt.ram=/ckpt/ram_swin_large_14m.pth --config.prompt.dape=/ckpt/DAPE.pth

Variants:

* ``tiny``: seeded random networks of the real structure (SD UNet widths 32-128 pruned to 24-96,
  half decoder 32-64, D = that SD UNet + rank-4 LoRA, a small random DAPE-style tagger and
  2-layer text encoder for the per-image prompts), the bundled sample photos but the held-out
  two (``data.source=sample:train``) through the ``adcsr`` degradation at 64-pixel HR crops
  (16-pixel LR), batch 2, 200 steps, Adam 1e-3 for G (tiny only, so the loss visibly falls),
  evaluation on the held-out photos (``eval.lr_dir=sample:val``: 64-pixel crops degraded once)
  at steps 100 and 200. Hardware: one CPU. Measured on this project's 2-core CPU shared with
  two other jobs (``/usr/bin/time -v adcsr train --config configs/stage2.py:tiny --workdir
  /tmp/s2tiny``): about 5 min to trace and compile the step (3.3 min when the machine is idle),
  then 1.6-2.2 steps/s; 8.5 min in all with the exports; peak RSS 6.3 GB. A rerun or a resume
  loads the compiled step from the persistent XLA cache (``adcsr train --compile-cache``).
  Result: ``loss/distill`` 31.5 -> 28.6 over 100 steps at batch 4 (random teacher, so the
  images are not meaningful); ``tests/train/test_stage2_run.py`` checks that it falls.
* ``full``: the paper: global batch 96 (AdcSR: 8 GPUs x 12), 512 HR crops (128 LR), 200k steps,
  Adam 1e-4 halved at 100k (``train.py``'s MultiStepLR at epoch 100 of 200), D Adam 1e-6,
  lambda_adv 1. Needs SD 2.1-base (diffusers folder), the OSEDiff teacher (converted folder or
  ``osediff.pkl``), stage 1's half decoder and an LSDIR-style HR folder. Hardware: the
  paper trained on 8 GPUs (``train.py``: DDP, batch 12 each); on TPU pods / GPU clusters use bf16
  (``--config.compute_dtype=bfloat16``), ``remat`` and ``grad_accum`` as memory needs. Memory:
  ~7.5 GB of frozen fp32 weights (teacher UNet 3.5 + D base 3.5 + the two VAE parts 0.5), about
  3 GB more for DAPE (RAM Swin-L) and the text encoder, 1.8 GB trainable (446M) + 3.6 GB Adam,
  before activations; sharded FSDP-style by ``sharding.rules`` (``adcsr plan`` prints the
  per-device plan). Expected result: the released AdcSR (paper Table 1); not reproduced here
  (no GPU time for 200k steps). The prompts come from DAPE and SD 2.1's text encoder
  (``config.prompt.ram`` / ``dape``; the text encoder defaults to
  ``<model.sd21>/text_encoder``), computed per LR image by their own program before each step
  (``prompt.program='batch'``; ``'step'`` runs them inside the step).

Presets (``full`` on one target machine; ``PRESETS``): the global batch stays 96 and the split
over devices and micro-batches (``grad_accum``, each of ``96 / (devices x grad_accum)`` images
per device) and the memory options (``frozen_dtype``, ``attention_query_chunk``) are chosen for
the target from the per-part figures (README, "What the full-size stage-2 step costs"). Each
is planned with ``adcsr plan --fast-compile`` on simulated CPU devices (the TPU presets on 8
devices with their FSDP axis of 8 and their per-device micro-batch: the same per-device state
and activations; their data axis only adds the gradient all-reduce); figures per device
(XLA:CPU's estimate; a GPU/TPU compiler schedules and fuses differently, and runs bf16 natively
where XLA:CPU upcasts, see ``gpu_24gb``):

* ``gpu_8x80gb`` (8 GPUs x 80 GB; 3 micro-batches of 4 per GPU, bf16 compute, fp32 frozen
  weights, remat, unchunked attention): trainable 1.68 + Adam 3.36 + frozen 8.99 GiB,
  arguments 14.08 GiB, temporaries 42.85 GiB, peak 56.93 GiB per GPU (23 GB of headroom on
  80 GB); 136 TFLOP per GPU and step (45.4 per micro-batch of 4, 11.3 per image); 1.82 GB of
  all-reduce per GPU in the compiled step (the size of one fp32 gradient of the 451M trainable
  parameters; counted once, as the FLOPs).
  Planned in 934 s (15.6 min) on 8 simulated CPU devices, 7.0 GB RSS, beside a benchmark:
  ``adcsr plan --config configs/stage2.py:gpu_8x80gb --fast-compile``.
* ``tpu_v5e_32`` (TPU v5e-32, 16 GB/chip; 3 micro-batches of 1 per chip, bf16 frozen weights,
  attention chunks of 1024; planned as one FSDP group of 8): trainable 0.22 + Adam 0.44 +
  frozen 1.55 GiB per chip (FSDP over 8), arguments 2.22 GiB, temporaries 9.43 GiB, peak 11.65
  GiB (4.3 GiB of headroom on 16, on XLA:CPU, which also upcasts bf16 weights here). XLA counts
  10.3 TFLOP per micro-batch, but the attention's query-chunk loops are counted once like the
  micro-batch loop: at the unchunked plans' 11.3 TFLOP per image, about 34 TFLOP per chip and
  step. Collectives as compiled (those inside the micro-batch loop run 3 times): all-gather
  2.61 GB (FSDP weights), all-reduce 1.70 GB, all-to-all 0.80 GB, collective-permute 0.05 GB
  per chip. Planned in 2090 s (35 min, beside other jobs), 8.0 GB RSS:
  ``adcsr plan --config configs/stage2.py:tpu_v5e_32 --fast-compile --devices 8 --config.mesh.data=1 --config.data.batch_size=24``.
* ``tpu_v4_32`` (TPU v4-32 / v5p-32, 32 / 95 GB/chip; 3 micro-batches of 2 per chip, bf16
  frozen weights, unchunked attention; planned as one FSDP group of 8): trainable 0.22 + Adam
  0.44 + frozen 1.55 GiB per chip, arguments 2.23 GiB, temporaries 20.52 GiB, peak 22.75 GiB
  (9.2 GiB of headroom on a v4's 32 GB); 23.2 TFLOP per micro-batch of 2 (11.6 per image),
  69.5 TFLOP per chip and step; collectives as compiled: all-gather 2.89 GB, all-reduce 2.32
  GB, all-to-all 1.44 GB, collective-permute 0.08 GB per chip. Planned in 1315 s (22 min,
  beside other jobs), 9.0 GB RSS:
  ``adcsr plan --config configs/stage2.py:tpu_v4_32 --fast-compile --devices 8 --config.mesh.data=1 --config.data.batch_size=48``.
* ``gpu_24gb`` (1 GPU x 24 GB; 96 micro-batches of 1, bf16 compute and frozen weights, chunked
  attention, remat): trainable 1.68 + Adam 3.36 + frozen 4.50 GiB (the frozen part includes
  DAPE and the text encoder, 1.0 GiB, which the per-batch prompt program reads), arguments 9.87
  GiB, temporaries 17.98 GiB, peak 27.84 GiB: over 24 as XLA:CPU compiles it. Of that, 6.52 GiB
  are fp32 copies of the bf16 frozen weights and 0.84 GiB the fp32 half of the trainable
  weights' bf16 rounding: XLA:CPU runs bf16 convolutions in fp32 and hoists those converts out
  of the micro-batch loop (``scripts/plan_upcasts.py`` on the plan's XLA dump). A GPU runs them
  in bf16, so the estimate there is about 20.5 GiB (not measured on a GPU: no device was lent).
  XLA counts 10.0 TFLOP per micro-batch of one image (each loop body once, the attention's
  query-chunk loops included): at the unchunked plans' 11.3 TFLOP per image, about 1090 TFLOP
  per step. Planned in 38 min (another job running), 6.1 GB RSS.

``model.half_decoder``: a ``halfDecoder.ckpt`` (AdcSR's layout or latent-diffusion's) or a
stage-1 workdir (``configs/stage1.py``), which resolves to the ``halfDecoder.ckpt`` stage 1
exported there (``adcsr_jax.weights.half_decoder.resolve_half_decoder_file``; an error names the
file looked for and what the folder holds).

Fields: ``model`` (where the networks come from), ``prompt`` (``tagger``: DAPE tags of each
LR image through SD 2.1's text encoder, as ``train.py``; ``fixed``: one embedding for all),
``disc``, ``optim``, ``loss``, ``compute_dtype``, ``remat``, ``grad_accum``, ``eval`` (held-out
paired folders), ``export``; the engine's fields
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
            "source": "sample:train" if tiny else "",
            "batch_size": 2 if tiny else 96,
            "crop": 64 if tiny else 512,
            "degradation": "adcsr",
            "pool_size": 8 if tiny else -1,  # -1: the preset's (1200)
        }
    )


# Memory presets: ``full`` with the mesh, batch split and memory options of one target machine
# (module docstring: "Presets"; each was planned with ``adcsr plan``). Keys: config fields.
PRESETS: dict[str, dict] = {
    # the paper's global batch 96 on one node of 8 GPUs with 80 GB (AdcSR: 8 x 12, DDP): 3
    # micro-batches of 4 per GPU
    "gpu_8x80gb": {
        "mesh": (8, 1, 1),
        "grad_accum": 3,
        "frozen_dtype": "",
        "chunk": 0,
        "num_workers": 16,
    },  # 96 images per host per step (README: host data throughput)
    # TPU v5e-32 (32 chips, 16 GB HBM each): FSDP over 8 chips x 4 data groups, 3 micro-batches
    # of 1 per chip, bf16 frozen weights, exact chunked attention
    "tpu_v5e_32": {"mesh": (4, 8, 1), "grad_accum": 3, "frozen_dtype": "bfloat16", "chunk": 1024},
    # TPU v4-32 / v5p-32 (16 chips, 32 GB / 95 GB HBM each): FSDP over 8 x 2 data groups, 3
    # micro-batches of 2 per chip, bf16 frozen weights
    "tpu_v4_32": {"mesh": (2, 8, 1), "grad_accum": 3, "frozen_dtype": "bfloat16", "chunk": 0},
    # one 24 GB GPU (OSEDiff #69 / #70): 96 micro-batches of 1, bf16 frozen weights, chunked
    # attention (and remat and bf16 compute, as every full config)
    "gpu_24gb": {"mesh": (1, 1, 1), "grad_accum": 96, "frozen_dtype": "bfloat16", "chunk": 1024},
}


def apply_preset(config: ml_collections.ConfigDict, name: str) -> None:
    """``PRESETS[name]`` on a ``full`` config (bf16 compute and remat stay on)."""
    p = PRESETS[name]
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = p["mesh"]
    config.grad_accum = p["grad_accum"]
    config.frozen_dtype = p["frozen_dtype"]
    config.attention_query_chunk = p["chunk"]
    if "num_workers" in p:
        config.data.num_workers = p["num_workers"]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``tiny`` (the default), ``full`` or a memory preset (``PRESETS``; module docstring)."""
    arg = arg or "tiny"
    if arg not in ("tiny", "full", *PRESETS):
        raise ValueError(
            f"configs/stage2.py: variant must be 'tiny', 'full' or one of {sorted(PRESETS)}, "
            f"got {arg!r}"
        )
    preset = arg if arg in PRESETS else None
    arg = "full" if preset else arg
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
            # stage 1's halfDecoder.ckpt; with source='random' it (and sd_vae) replaces the
            # drawn one: a tiny stage 1's result (adcsr demo)
            "half_decoder": "",
            "sd_vae": "",  # source='random' only: the VAE stage 1 ran on (diffusers or ours)
            "student": "",  # optional: AdcSR folder or net_params_*.pkl to fine-tune
        }
    )
    config.prompt = ml_collections.ConfigDict(
        {
            # "tagger": DAPE's tags of each LR image -> SD 2.1's text encoder, on the device in
            # the step (train.py); "fixed": one embedding for every image (`embedding`, or seeded
            # N(0, 1) of shape (length, D) when empty).
            "source": "tagger",
            # "batch": the tagger and text encoder run as their own program on each batch
            # before the step (measured 1.20x faster at tiny size); "step": inside the step
            "program": "batch",
            "ram": "",  # ram_swin_large_14m.pth (tiny: a seeded random small tagger)
            "dape": "",  # DAPE.pth (OSEDiff's LoRA for RAM; empty: plain RAM)
            "text_encoder": "",  # SD 2.1's text_encoder/ (default <model.sd21>/text_encoder)
            "tokenizer": "",  # SD 2.1's tokenizer/ (default: beside text_encoder, or bundled)
            "embedding": "",  # "fixed": a (77, D) .npy
            "length": 77,
            "seed": 0,
        }
    )
    config.disc = ml_collections.ConfigDict({"rank": 4})
    config.optim = ml_collections.ConfigDict(
        {
            "lr_g": 1e-3 if tiny else 1e-4,  # tiny: fast enough to see the loss fall
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
    config.frozen_dtype = ""  # "": as loaded (fp32); "bfloat16": frozen networks stored in bf16
    config.remat = not tiny
    config.grad_accum = 1
    # Exact CPU fast paths (chunked attention, im2col-matmul convs on small maps); 0 = off. The
    # chunked attention is also the training-memory option: its backward recomputes one chunk's
    # logits at a time instead of keeping every (heads, T, T) probability map (full size, fp32,
    # batch 1: D's forward + backward 5.45 -> 3.12 GiB, the student's 3.50 -> 1.12 GiB;
    # scripts/plan_components.py), so ``full`` uses it on the 64x64 latents of 512 crops.
    config.attention_query_chunk = 0 if tiny else 1024
    config.conv_matmul_max_pixels = 0
    config.eval = ml_collections.ConfigDict(
        {
            "every_steps": 100 if tiny else 5_000,  # 0: never (the loop's field)
            # held-out pairs: two folders, or "sample:val" (the held-out sample photos, centre
            # `crop` crops degraded with the adcsr preset); "" = no evaluation
            "lr_dir": "sample:val" if tiny else "",
            "hr_dir": "",
            "crop": 64 if tiny else 512,
            "metrics": ("psnr", "lpips", "dists"),
            "limit": 0,  # 0 = every pair
            "num_grids": 4,
            "weights_dir": "",  # metric weights cache (adcsr convert metrics)
        }
    )
    config.export = ml_collections.ConfigDict({"official": True, "disc_peft": True})
    if preset:
        config.variant = preset
        apply_preset(config, preset)
    return config
