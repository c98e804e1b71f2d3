"""Stage 1 of AdcSR: pretrain the 50%-width VAE decoder (``adcsr_jax.train.stage1``).

Command::

    adcsr train --config configs/stage1.py:tiny --workdir /tmp/stage1_tiny
    adcsr train --config configs/stage1.py:full --workdir runs/stage1 \
        --config.data.source=/data/openimages --config.model.sd_vae=stable-diffusion-2-1-base

Outputs: ``<workdir>/half_decoder/`` (our converted folder, kind ``decoder``) and
``<workdir>/halfDecoder.ckpt`` (AdcSR ``train.py`` / ``test.py`` load it strictly). Stage 2
takes the workdir itself or that file: ``--config.model.half_decoder=/tmp/stage1_tiny``
(``weights.half_decoder.resolve_half_decoder_file``; a run stopped early exports with
``--export-only``).

``tiny``: random SD-VAE-shaped networks (SD widths 64/64/128/128, half decoder 32/32/64/64 =
``AdcSRConfig.tiny``'s decoder), random LPIPS-VGG weights, 32 px crops of the bundled sample
photos (``adcsr_jax.data.sample_set``), batch 4, 200 steps, D from step 100, checkpoints every
50, validation (PSNR/LPIPS of half vs SD decoder on 64 px centre crops, grid) at 100 and 200 on
the two held-out photos (chelsea, coffee: ``sample:val``; training reads ``sample:train``, the
other five). Measured from a fresh
workdir on this 2-core CPU (``/usr/bin/time -v python -m adcsr_jax train --config
configs/stage1.py:tiny --workdir DIR``): first step after about 20 s (imports, init, compile
of the step: XLA reports 13.5 GFLOP per step), then 1.4-1.6 steps/s alone on the machine (0.5
with two other jobs running: 6 min 40 s wall for the whole run), so about 2.5-3 min in all
unloaded; peak RSS 2.2 GB. ``loss/rec`` falls from 0.70 (steps 1-10) to 0.48 (step 100) and
stays near it once D starts (0.46-0.52 over steps 110-200); at step 200 val PSNR (Y) of the half
decoder 13.9 dB vs 10.9 dB for the random SD decoder, LPIPS 0.066 vs 0.097 (random networks: the
figures only show the path works). Compile does not dominate, so nothing was shrunk.

``full`` (each number with its source; "no source" where the authors published none):

* network: SD 2.1-base VAE (frozen encoder, quant_conv, post_quant_conv), half decoder by pruning
  SD's decoder to its leading 50% channels (AdcSR: "channel pruning" of the decoder; whether the
  authors started from the pruned weights or from scratch is not public: ``decoder_init``);
* loss: latent-diffusion ``models/first_stage_models/kl-f8/config.yaml`` and
  ``configs/autoencoder/autoencoder_kl_32x32x4.yaml``: ``disc_start`` 50001, ``disc_weight``
  0.5, ``kl_weight`` 1e-6 (no KL here: frozen encoder), ``LPIPSWithDiscriminator`` defaults
  ``perceptual_weight`` 1.0, ``logvar_init`` 0.0, ``disc_factor`` 1.0, hinge loss, 3 layers,
  64 filters (taming ``NLayerDiscriminator`` default ``ndf``);
* optimiser: ldm ``AutoencoderKL.configure_optimizers``: Adam, betas (0.5, 0.9) (torch eps 1e-8),
  both optimisers the same learning rate, no schedule; ldm ``main.py``: lr = accumulate x ngpu x
  batch x ``base_learning_rate`` with ``base_learning_rate`` 4.5e-6 (both configs);
  ``autoencoder_kl_32x32x4.yaml``: batch 12, ``accumulate_grad_batches`` 2, one GPU (ldm README's
  command ``--gpus 0,``) -> global batch 24 per update, lr = 24 x 4.5e-6 = 1.08e-4;
* data: 512 crops (the issue; AdcSR trains stage 2 on 512 crops; ldm trains at 256); AdcSR's
  paper as summarised by third parties: 250K steps on OpenImages, then 250K on LAION-Face +
  LAION-Aesthetic (not verifiable here: no source text). ``total_steps`` 500K follows that
  summary; switch ``data.source`` between the two phases (resume keeps the state).
* batch: no AdcSR source; ldm's 24 (above).

Presets (``full`` on one target machine; ``PRESETS``): ldm's global batch 24 split over devices
and ``optim.micro_batches``, compute dtype per target; planned with ``adcsr plan --config
configs/stage1.py:PRESET --fast-compile`` (per device, XLA:CPU's estimate):

* ``gpu_8x80gb`` (8 GPUs x 80 GB; 3 crops per GPU, fp32): trainable 0.06 + Adam 0.11 + frozen
  0.18 GiB, temporaries 15.45 GiB, peak 15.81 GiB of 80; 13.5 TFLOP per device per step (4.5 per
  crop); collectives 3.58 GB per device per step: the gradient all-reduce 72 MB, then 3.47 GB of
  collective-permutes and 38 MB of all-to-alls that XLA:CPU's SPMD partitioner inserted (not
  traced to their ops; about 12 ms a step over 300 GB/s NVLink). Planned in 215 s, 1.45 GB RSS.
* ``tpu_v5e_8`` (TPU v5e-8, 16 GB/chip; 3 crops per chip, bf16 compute): the same state,
  temporaries 13.64 GiB, peak 14.00 GiB of 16 (2 GiB to spare); 13.6 TFLOP per chip per step;
  the same 3.58 GB of collectives. Planned in 49 s, 1.53 GB RSS.
* ``tpu_v4_16`` (TPU v4-16 / v5p-16: 8 chips, 32 / 95 GB/chip): the v5e-8 plan (same mesh and
  split), peak 14.00 GiB of 32 / 95. Planned in 50 s, 1.59 GB RSS.
* ``gpu_24gb`` (1 GPU x 24 GB; 6 micro-batches of 4, bf16 compute): arguments 0.42 GiB (the
  same state), temporaries 19.78 GiB, peak 20.20 GiB of 24 (about 3.8 GiB to spare); about 108
  TFLOP per step (24 crops at 4.5; XLA counts the micro-batch loop's body once). Planned in 631 s,
  1.65 GB RSS.

BatchNorm of the PatchGAN under sharding: ``jax.jit`` over the global batch gives batch statistics
of the whole global batch (taming under DDP normalises per GPU), so 1 and N devices agree; running
statistics are kept in ``train.disc_batch_stats`` as torch's ``BatchNorm2d`` keeps them
(momentum 0.1, unbiased variance), though training never reads them (D is always in train mode,
as in ldm).

Expected on 8 x A100-80G (planned, not measured on a GPU): the stage-1 step at batch 24 x 512^2
fits without accumulation in fp32 (``gpu_8x80gb`` above). CPU figures (``flock /tmp/adcsr-heavy.lock env PYTHONPATH=$PWD
python scripts/bench_train_stage1.py --steps 3 --repeats 1``: full-size networks, batch 1, 256^2
crops, fp32, disc_start 0, this 2-core CPU with other work running niced): Flax 10.1 s/step
(first step 26 s incl. compile; 1.1 TFLOP per step), peak RSS 3.6 GB; torch reference 25.7
s/step, 2.4 GB; Flax / torch time 0.39x.
"""

from __future__ import annotations

import ml_collections


def engine_fields(c: ml_collections.ConfigDict) -> None:
    """The engine's fields this stage sets (names of ``adcsr_jax.train.config.base_config``)."""
    c.stage = "stage1"
    c.seed = 0
    c.total_steps = 500_000
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, "num_devices": -1})
    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds:~/tensorflow_datasets:hr_images"
    c.data.batch_size = 24
    c.data.crop = 512
    c.data.flip = True
    c.data.degradation = None  # HR crops only
    c.data.pool_size = 0
    c.data.output_dtype = "float32"
    c.data.prefetch = 2
    c.data.num_workers = 4
    c.checkpoint = ml_collections.ConfigDict(
        {"every_steps": 5000, "keep_last": 3, "keep_every": 50_000, "asynchronous": True}
    )
    c.log = ml_collections.ConfigDict({"every_steps": 50, "tensorboard": True})
    c.eval = ml_collections.ConfigDict({"every_steps": 5000, "at_end": True})
    c.max_nonfinite_in_a_row = 10
    c.export_at_end = True


def stage_fields(c: ml_collections.ConfigDict) -> None:
    """Stage 1's own fields (read by ``adcsr_jax.train.stage1``), ``full`` values."""
    m = c.model = ml_collections.ConfigDict()
    m.sd_vae = "stable-diffusion-2-1-base"  # diffusers pipeline root / vae folder; "" = random
    m.sd_block_out_channels = (128, 256, 512, 512)  # used for random weights (sd_vae = "")
    m.layers_per_block = 2
    m.norm_num_groups = 32
    m.ratio = 0.5  # half decoder: leading int(0.5 * w) channels, widths 64/128/256/256
    m.decoder_init = "prune"  # "prune" | "scratch" | "checkpoint"
    m.decoder_checkpoint = ""  # for "checkpoint": halfDecoder.ckpt (either layout) or our folder
    m.dtype = "float32"  # compute dtype of the VAE parts (losses and norms stay fp32)
    m.attention_query_chunk = None
    m.conv_matmul_max_pixels = None
    m.seed = 0  # host-side random weights (tiny) and the decoder's scratch init

    loss = c.loss = ml_collections.ConfigDict()
    loss.perceptual_weight = 1.0
    loss.lpips_weights = ""  # "" = `adcsr convert metrics` cache; a folder; or "random"
    loss.logvar_init = 0.0
    loss.train_logvar = False  # ldm never hands logvar to an optimiser (see the stage docstring)
    loss.disc_start = 50_001
    loss.disc_factor = 1.0
    loss.disc_weight = 0.5
    loss.disc_loss = "hinge"
    loss.disc_num_layers = 3
    loss.disc_ndf = 64

    o = c.optim = ml_collections.ConfigDict()
    o.base_lr = 4.5e-6
    o.scale_lr = True  # lr = base_lr x data.batch_size (ldm main.py)
    o.b1 = 0.5
    o.b2 = 0.9
    o.eps = 1e-8
    o.micro_batches = 2  # ldm accumulate_grad_batches

    c.eval.dir = ""  # held-out HR images (folder or sample:val); "" = no validation
    c.eval.num_images = 8
    c.eval.crop = 512
    c.eval.grid_images = 4
    c.eval.lpips_net = "alex"  # "alex" (the SR papers' LPIPS) or "vgg" (the loss network)


def tiny(c: ml_collections.ConfigDict) -> None:
    c.total_steps = 200
    c.data.source = "sample:train"  # all but the validation photos
    c.data.batch_size = 4
    c.data.crop = 32
    c.data.num_workers = 2
    c.checkpoint.every_steps = 50
    c.checkpoint.keep_every = 0
    c.checkpoint.asynchronous = False
    c.log.every_steps = 10
    c.log.tensorboard = False
    c.eval.every_steps = 100
    c.model.sd_vae = ""
    c.model.sd_block_out_channels = (64, 64, 128, 128)
    c.loss.lpips_weights = "random"
    c.loss.disc_start = 100
    c.loss.disc_ndf = 16
    c.optim.base_lr = 2.5e-5  # x batch 4 = 1e-4 (tiny only: fast enough to see the loss fall)
    c.optim.micro_batches = 1
    c.eval.dir = "sample:val"
    c.eval.num_images = 2
    c.eval.crop = 64
    c.eval.grid_images = 2
    c.eval.lpips_net = "vgg"


# Memory presets: ``full`` (global batch 24, ldm's) with the mesh, micro-batches and compute
# dtype of one target machine (module docstring: "Presets", each planned with ``adcsr plan``).
PRESETS: dict[str, dict] = {
    # 8 GPUs with 80 GB: 3 crops per GPU, no accumulation needed
    "gpu_8x80gb": {"mesh": (8, 1, 1), "micro_batches": 1, "dtype": "float32"},
    # TPU v5e-8 (8 chips, 16 GB each; 24 crops do not split over 16 or 32 chips): bf16
    "tpu_v5e_8": {"mesh": (8, 1, 1), "micro_batches": 1, "dtype": "bfloat16"},
    # TPU v4-16 / v5p-16 (8 chips, 32 GB / 95 GB each)
    "tpu_v4_16": {"mesh": (8, 1, 1), "micro_batches": 1, "dtype": "bfloat16"},
    # one 24 GB GPU: ldm's batch 24 as 6 micro-batches of 4, bf16
    "gpu_24gb": {"mesh": (1, 1, 1), "micro_batches": 6, "dtype": "bfloat16"},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``full`` (default), ``tiny`` or a memory preset (``PRESETS``; module docstring)."""
    variant = arg or "full"
    if variant not in ("full", "tiny", *PRESETS):
        raise ValueError(
            f"configs/stage1.py: variant must be 'full', 'tiny' or one of {sorted(PRESETS)}, "
            f"got {variant!r}"
        )
    c = ml_collections.ConfigDict()
    engine_fields(c)
    stage_fields(c)
    if variant == "tiny":
        tiny(c)
    if variant in PRESETS:
        p = PRESETS[variant]
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = p["mesh"]
        c.mesh.num_devices = p["mesh"][0] * p["mesh"][1] * p["mesh"][2]
        c.optim.micro_batches = p["micro_batches"]
        c.model.dtype = p["dtype"]
    return c
