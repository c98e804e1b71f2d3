"""Stage 2 of AdcSR: adversarial distillation of OSEDiff into the pruned student (AdcSR ``train.py``).

One step on a batch of ``lq`` (B,h,w,3) / ``gt`` (B,4h,4w,3) pairs in [0, 1], mapped to [-1, 1]:

* teacher feature ``f_T``: OSEDiff (merged VAE and UNet): VAE mean of the bicubic x4 LR times
  0.18215, UNet at t = 999 with the prompt embedding, closed-form z0, then the frozen half
  decoder's ``mid_block(conv_in(post_quant_conv(z0 / 0.18215)))``;
* real feature ``f_R``: SD 2.1-base's VAE mean of the HR -> its ``post_quant_conv`` -> the same
  frozen ``conv_in`` and ``mid_block``;
* student feature ``f_S`` = ``AdcSR.features(LR)`` (pruned UNet + its own trainable mid block);
* generator loss ``mean|f_S - f_T| + lambda_adv * mean softplus(-D(f_S))``;
* discriminator loss ``mean softplus(D(sg f_S)) + mean softplus(-D(f_R))``;
* G is updated (Adam, lr 1e-4 halved at 100k steps: ``MultiStepLR`` in steps), then D (Adam
  1e-6) on the same batch with the ``f_S`` computed before G's update. Neither gradient depends
  on the other update (D's loss reads the pre-update ``f_S``; G's reads the pre-update D), so
  both gradients come from one pass: D runs once on ``f_S`` and its VJP gives G's cotangent and
  D's fake-term gradient, as ``train.py``'s three D calls would.

State (see :mod:`adcsr_jax.train.stage`)::

    train:  {"student": {"unet", "mid_block"}, "disc": D's trainable params,
             "opt_g": Adam state of student, "opt_d": Adam state of disc}
    frozen: {"teacher": {"vae", "unet"}, "half_stem": {"conv_in", "mid_block"},
             "sd_vae": {"encoder", "quant_conv", "post_quant_conv"},
             "student_tail": {"decoder"}, "disc": D's frozen base, "prompt": (77, D)}

Options: ``config.compute_dtype`` (bf16 compute; params, norms, softmax and losses in fp32),
``config.frozen_dtype`` (``""``: the frozen networks as loaded, fp32; ``"bfloat16"``: stored in
bf16, half their memory; matmuls and convs already run in the compute dtype, norm scales and
biases are then bf16-rounded),
``config.remat`` (``nn.remat`` on UNet / decoder blocks of the student and D),
``config.grad_accum`` (mean of micro-batch gradients, ``train/accumulate.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, finish
from adcsr_jax.models.discriminator import (
    DiscriminatorConfig,
    discriminator_logits,
    init_discriminator,
)
from adcsr_jax.models.osediff import OSEDiff, OSEDiffConfig
from adcsr_jax.models.tagger import prompt_embeddings_on_device
from adcsr_jax.train.accumulate import accumulate
from adcsr_jax.train.stage import Batch, Metrics, Stage, State
from adcsr_jax.weights.prompt_weights import PromptWeights

log = logging.getLogger(__name__)

NAME = "stage2"
BATCH_KEYS = ("lr", "gt")
PROMPT_KEYS = ("text", "tags")  # added by the per-batch prompt program (prepare_prompts)
F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Nets:
    """The architectures of one stage-2 run (compute dtype and remat applied)."""

    student: AdcSRConfig
    teacher: OSEDiffConfig
    disc: DiscriminatorConfig
    # DAPE + text encoder without their params (those live in frozen["tagger"] and
    # frozen["text_encoder"]); None: one fixed embedding, frozen["prompt"].
    prompt: PromptWeights | None = None


def _with_dtype(nets: Nets, dtype: str, remat: bool) -> Nets:
    unet = dataclasses.replace(nets.disc.unet, dtype=dtype, remat=remat)
    disc = dataclasses.replace(nets.disc, unet=unet)
    return dataclasses.replace(
        nets,
        student=nets.student.replace(dtype=dtype, remat=remat),
        teacher=nets.teacher.with_dtype(dtype),
        disc=disc,
    )


# -- the three feature maps and D ---------------------------------------------------------------


def student_features(nets: Nets, student: Any, lq: jax.Array) -> jax.Array:
    """``f_S`` (B,h/2,w/2,C) in fp32 from LR in [-1, 1]."""
    module = AdcSR(nets.student)
    return module.apply({"params": student}, lq, method=AdcSR.features).astype(F32)


def teacher_features(nets: Nets, frozen: Any, lq: jax.Array, text: jax.Array) -> jax.Array:
    """``f_T``: OSEDiff one step, then the frozen half-decoder stem (fp32); z0 in latent space."""
    if nets.student.feature_space == "latent":  # TAESD ablation: no half decoder
        return OSEDiff(nets.teacher).apply(
            {"params": frozen["teacher"]}, lq, text, method=OSEDiff.z0
        )
    params = {**frozen["teacher"], "half_decoder": frozen["half_stem"]}
    return OSEDiff(nets.teacher).apply({"params": params}, lq, text, method=OSEDiff.features)


def real_features(nets: Nets, frozen: Any, gt: jax.Array) -> jax.Array:
    """``f_R``: SD VAE mean of HR -> SD post_quant_conv -> frozen half-decoder stem (fp32)."""
    if nets.student.feature_space == "latent":  # TAESD ablation: the scaled SD latent mean
        vae = {"vae": frozen["sd_vae"]}
        return OSEDiff(nets.teacher).apply({"params": vae}, gt, method=OSEDiff.encode_image)
    params = {"vae": frozen["sd_vae"], "half_decoder": frozen["half_stem"]}
    return OSEDiff(nets.teacher).apply({"params": params}, gt, method=OSEDiff.image_features)


def disc_logits(nets: Nets, trainable: Any, frozen: Any, f: jax.Array, text: jax.Array):
    """D's raw output map at t = 999, fp32."""
    return discriminator_logits(nets.disc, trainable, frozen["disc"], f, text).astype(F32)


def _mean_softplus(x: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.softplus(x.astype(F32)))


# -- optimizers ---------------------------------------------------------------------------------


def lr_schedule(base: float, milestones: tuple[int, ...], gamma: float) -> optax.Schedule:
    """``MultiStepLR``: ``base * gamma ** (number of milestones <= step)``, step = updates done."""
    return optax.piecewise_constant_schedule(base, {int(m): float(gamma) for m in milestones})


def optimizers(config: Any) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(G's, D's) ``torch.optim.Adam`` (default betas and eps, no weight decay); lr in the state."""
    o = config.optim
    sched = lr_schedule(o.lr_g, tuple(o.milestones), o.gamma)
    adam = optax.inject_hyperparams(optax.adam)
    tx_g = adam(learning_rate=sched, b1=o.b1, b2=o.b2, eps=o.eps)
    tx_d = adam(learning_rate=o.lr_d, b1=o.b1, b2=o.b2, eps=o.eps)
    return tx_g, tx_d


# -- the step -----------------------------------------------------------------------------------


def batch_prompts(nets: Nets, frozen: Any, lr01: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """``(B, 77, D)`` prompt embeddings of an LR batch in [0, 1], and the tag count per image.

    With the tagger (``config.prompt.source='tagger'``): AdcSR ``train.py``'s
    ``text_encoder(tokenize(DAPE(ram_tf(LR))))``, tags alone, computed on the device inside the
    step; else the fixed embedding for every image (count None)."""
    if nets.prompt is None:
        prompt = frozen["prompt"]
        return jnp.broadcast_to(prompt[None], (lr01.shape[0], *prompt.shape)), None
    p = nets.prompt
    tagger = dataclasses.replace(p.tagger, params=frozen["tagger"])
    emb, hits = prompt_embeddings_on_device(
        tagger, p.tag_tokens, (p.text_module, frozen["text_encoder"]), lr01, return_hits=True
    )
    return jax.lax.stop_gradient(emb).astype(F32), hits.sum(axis=1)


def prepare_prompts(nets: Nets, frozen: Any, batch: Batch) -> dict[str, jax.Array]:
    """The per-batch program (``config.prompt.program='batch'``): :func:`batch_prompts` of the
    batch's LR as ``{"text": (B, 77, D), "tags": (B,)}``, which the step then reads instead of
    running the tagger and text encoder itself. Measured (``scripts/bench_train.py``, tiny
    config): the step with the prompt path inside took 0.202 s, this program then the step
    0.003 + 0.165 s (1.20x faster); the values are the same either way."""
    text, tags = batch_prompts(nets, frozen, batch["lr"].astype(F32))
    return {"text": text, "tags": tags.astype(F32)}


def grads_and_metrics(
    nets: Nets, lambda_adv: float, train: Any, frozen: Any, batch: Batch
) -> tuple[tuple[Any, Any], Metrics]:
    """G's and D's gradients and the loss terms of one (micro-)batch."""
    lq = batch["lr"].astype(F32) * 2 - 1
    gt = batch["gt"].astype(F32) * 2 - 1
    if "text" in batch:  # computed by the per-batch program (prepare_prompts)
        text, tags = batch["text"], batch.get("tags")
    else:
        text, tags = batch_prompts(nets, frozen, batch["lr"].astype(F32))
    f_t = jax.lax.stop_gradient(teacher_features(nets, frozen, lq, text))
    f_r = jax.lax.stop_gradient(real_features(nets, frozen, gt))

    f_s, student_vjp = jax.vjp(lambda s: student_features(nets, s, lq), train["student"])
    fake, fake_vjp = jax.vjp(lambda d, f: disc_logits(nets, d, frozen, f, text), train["disc"], f_s)
    distill, d_distill = jax.value_and_grad(lambda f: jnp.mean(jnp.abs(f - f_t)))(f_s)
    adv, d_adv = jax.value_and_grad(lambda x: _mean_softplus(-x))(fake)
    _, d_f_adv = fake_vjp(jnp.float32(lambda_adv) * d_adv)
    (g_grads,) = student_vjp(d_distill + d_f_adv)

    d_fake, dd_fake = jax.value_and_grad(_mean_softplus)(fake)  # D on sg(f_S): same logits
    (d_grads_fake, _) = fake_vjp(dd_fake)

    def real_loss(d: Any) -> tuple[jax.Array, jax.Array]:
        real = disc_logits(nets, d, frozen, f_r, text)
        return _mean_softplus(-real), jnp.mean(real)

    (d_real, logit_real), d_grads_real = jax.value_and_grad(real_loss, has_aux=True)(train["disc"])
    d_grads = jax.tree.map(jnp.add, d_grads_fake, d_grads_real)
    metrics = {
        "loss/distill": distill,
        "loss/adv_g": adv,
        "loss/g": distill + jnp.float32(lambda_adv) * adv,
        "loss/d": d_fake + d_real,
        "loss/d_real": d_real,
        "loss/d_fake": d_fake,
        "d/logit_real": logit_real,
        "d/logit_fake": jnp.mean(fake),
    }
    if tags is not None:
        metrics["prompt/tags_per_image"] = jnp.mean(tags.astype(F32))
    return (g_grads, d_grads), metrics


def make_step(
    config: Any, nets: Nets
) -> Callable[[State, Batch, jax.Array], tuple[State, Metrics]]:
    """The pure ``(state, batch, rng) -> (state, metrics)`` of stage 2 (``rng`` is unused: every
    term is deterministic, as ``train.py`` takes VAE means)."""
    tx_g, tx_d = optimizers(config)
    lambda_adv = float(config.loss.lambda_adv)
    micro = int(config.grad_accum)

    def step(state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        del rng
        train, frozen = state["train"], state["frozen"]
        batch = {k: batch[k] for k in (*BATCH_KEYS, *PROMPT_KEYS) if k in batch}
        (g_grads, d_grads), metrics = accumulate(
            lambda mb: grads_and_metrics(nets, lambda_adv, train, frozen, mb), batch, micro
        )
        g_updates, opt_g = tx_g.update(g_grads, train["opt_g"], train["student"])
        d_updates, opt_d = tx_d.update(d_grads, train["opt_d"], train["disc"])
        new_train = {
            "student": optax.apply_updates(train["student"], g_updates),
            "disc": optax.apply_updates(train["disc"], d_updates),
            "opt_g": opt_g,
            "opt_d": opt_d,
        }
        metrics = {
            **metrics,
            "grad_norm/g": optax.global_norm(g_grads),
            "grad_norm/d": optax.global_norm(d_grads),
            "lr/g": jnp.asarray(opt_g.hyperparams["learning_rate"], F32),
            "lr/d": jnp.asarray(opt_d.hyperparams["learning_rate"], F32),
        }
        return {"train": new_train, "frozen": frozen}, {
            k: v.astype(F32) for k, v in metrics.items()
        }

    return step


# -- init ---------------------------------------------------------------------------------------


def load_weights(config: Any) -> Any:
    """The networks named in ``config.model`` (random seeded ones for ``source='random'``)."""
    from adcsr_jax.weights import stage2_weights as sw

    m = config.model
    variant = sw.student_variant(m)  # Table B.1 ablations: model.unet / model.decoder
    if m.source == "random":
        from adcsr_jax.weights.loaders import load_vae

        sd_vae = None
        if m.get("sd_vae"):
            module, params = load_vae(m.sd_vae)
            sd_vae = (module.config, jax.device_get(params))
        half = sw.read_half(m.half_decoder) if m.get("half_decoder") else None
        return sw.random_stage2_weights(
            m.size, int(m.seed), variant, sd_vae=sd_vae, half_decoder=half
        )
    if m.source != "files":
        raise ValueError(f"config.model.source must be 'random' or 'files', got {m.source!r}")
    missing = [k for k in sw.required_files(variant) if not m.get(k)]
    if missing:
        raise ValueError(f"config.model.source='files' needs config.model.{{{', '.join(missing)}}}")
    return sw.load_stage2_weights(m.sd21, m.osediff, m.get("half_decoder", ""),
                                  m.get("student") or None, variant, m.get("taesd_decoder"))  # fmt: skip


def load_prompt(config: Any, width: int) -> PromptWeights | None:
    """The tagger and text encoder of ``config.prompt.source='tagger'`` (None for ``'fixed'``):
    seeded random ones for ``model.source='random'`` (small; full-size for ``model.size='full'``),
    else ``prompt.ram`` / ``prompt.dape``
    and ``prompt.text_encoder`` (default ``<model.sd21>/text_encoder``)."""
    from adcsr_jax.weights.prompt_weights import load_prompt_weights, random_prompt_weights

    p = config.prompt
    if p.source == "fixed":
        return None
    if p.source != "tagger":
        raise ValueError(f"config.prompt.source must be 'fixed' or 'tagger', got {p.source!r}")
    if config.model.source == "random":  # full size: RAM Swin-L + SD 2.1's text encoder
        return random_prompt_weights(width, int(p.seed), full=config.model.size == "full")
    text_encoder = p.get("text_encoder") or (
        str(Path(config.model.sd21) / "text_encoder") if config.model.sd21 else ""
    )
    if not p.get("ram") or not text_encoder:
        raise ValueError(
            "config.prompt.source='tagger' needs config.prompt.ram (ram_swin_large_14m.pth; "
            "config.prompt.dape = DAPE.pth for OSEDiff's tagger) and config.prompt.text_encoder "
            "or config.model.sd21 (SD 2.1's text_encoder/); or set config.prompt.source='fixed'"
        )
    return load_prompt_weights(
        p.ram, p.get("dape") or None, text_encoder, p.get("tokenizer") or None, width
    )


def prompt_embedding(config: Any, width: int) -> np.ndarray:
    """The fixed prompt embedding (77, width): a ``.npy`` file, or seeded N(0, 1) when empty."""
    p = config.prompt
    if p.embedding:
        emb = np.load(p.embedding).astype(np.float32)
        if emb.ndim == 3 and emb.shape[0] == 1:
            emb = emb[0]
        if emb.ndim != 2 or emb.shape[1] != width:
            raise ValueError(
                f"{p.embedding}: prompt embedding of shape {emb.shape}, expected "
                f"({p.length}, {width}) (the text encoder's last hidden state)"
            )
        return emb
    rng = np.random.default_rng(int(p.seed))
    return rng.standard_normal((int(p.length), width)).astype(np.float32)


def disc_config(config: Any, weights: Any) -> DiscriminatorConfig:
    """D's architecture: SD's UNet with a ``feature_channels`` conv_in and rank-r LoRA."""
    return DiscriminatorConfig(
        unet=weights.sd_unet_config,
        feature_channels=weights.student_config.feature_channels,
        rank=int(config.disc.rank),
        conv_in=str(config.disc.get("conv_in", "full")),  # Table B.2 switches
        finetune=str(config.disc.get("finetune", "lora")),
    )


def _static_prompt(prompt: PromptWeights | None) -> PromptWeights | None:
    """The prompt path without its params (so that no jitted function closes over them)."""
    if prompt is None:
        return None
    tagger = dataclasses.replace(prompt.tagger, params=None)
    return dataclasses.replace(prompt, tagger=tagger, text_params=None)


def build_nets(config: Any, weights: Any, prompt: PromptWeights | None = None) -> Nets:
    """The architectures with ``compute_dtype``, ``remat`` and the exact CPU fast paths
    (``attention_query_chunk``, ``conv_matmul_max_pixels``; 0 = off) applied."""
    nets = Nets(
        weights.student_config,
        weights.teacher_config,
        disc_config(config, weights),
        _static_prompt(prompt),
    )
    nets = _with_dtype(nets, config.compute_dtype, bool(config.remat))
    chunk = int(config.get("attention_query_chunk", 0)) or None
    pixels = int(config.get("conv_matmul_max_pixels", 0)) or None
    if chunk is None and pixels is None:
        return nets
    fast = {"attention_query_chunk": chunk, "conv_matmul_max_pixels": pixels}
    disc_unet = dataclasses.replace(nets.disc.unet, **fast)
    return dataclasses.replace(
        nets,
        student=nets.student.replace(**fast),
        teacher=nets.teacher.with_fast_paths(chunk, pixels),
        disc=dataclasses.replace(nets.disc, unet=disc_unet),
    )


def init_state(
    config: Any,
    weights: Any,
    nets: Nets,
    rng: jax.Array,
    prompt: PromptWeights | None = None,
    fixed_prompt: Any = None,
) -> State:
    """The stage-2 state on the host from loaded (or random) weights (and the prompt path's);
    ``fixed_prompt``: the ``(length, D)`` embedding instead of :func:`prompt_embedding`'s."""
    tx_g, tx_d = optimizers(config)
    student = dict(weights.student)
    tail = {"decoder": student.pop("decoder")}
    disc = init_discriminator(nets.disc, weights.sd_unet, rng)
    frozen = {
        "teacher": weights.teacher,
        "half_stem": weights.half_stem,
        "sd_vae": weights.sd_vae,
        "student_tail": tail,
        "disc": disc["frozen"],
    }
    if prompt is None and fixed_prompt is not None:
        frozen["prompt"] = fixed_prompt
    elif prompt is None:
        frozen["prompt"] = prompt_embedding(config, nets.teacher.unet.cross_attention_dim)
    else:
        frozen["tagger"] = prompt.tagger.params
        frozen["text_encoder"] = prompt.text_params
    frozen_dtype = str(config.get("frozen_dtype", "") or "")
    if frozen_dtype:  # frozen weights stored in e.g. bf16 (read by bf16 compute anyway)
        frozen = jax.tree.map(lambda x: _cast_float(x, frozen_dtype), frozen)
    train = {
        "student": student,
        "disc": disc["trainable"],
        "opt_g": tx_g.init(student),
        "opt_d": tx_d.init(disc["trainable"]),
    }
    return {"train": train, "frozen": frozen}


def _cast_float(x: Any, dtype: str) -> Any:
    """Floating ``x`` (numpy, jax or traced) in ``dtype``; other leaves as they are."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if isinstance(x, np.ndarray):
        return x.astype(jnp.dtype(dtype))
    return jnp.asarray(x, dtype)


# -- shapes without weights (adcsr plan) ---------------------------------------------------------


def reads_files_for_shapes(config: Any) -> bool:
    """True for random networks built around given files (``model.sd_vae`` / ``half_decoder``,
    the tiny demo's stage-1 result): their architectures are those files', so the shapes come
    from loading them (small by construction)."""
    m = config.model
    return m.source == "random" and bool(m.get("sd_vae") or m.get("half_decoder"))


def abstract_weights(config: Any) -> Any:
    """``Stage2Weights`` of ``jax.ShapeDtypeStruct`` s for ``config.model``, reading no weight.

    Architectures as ``adcsr plan --params-only`` derives them
    (:func:`adcsr_jax.train.param_counts.sd_configs`: SD 2.1-base's unless ``model.sd21`` holds
    ``config.json`` files; AdcSR's half decoder widths; the Table B.1 variant); a converted
    student folder to fine-tune (``model.student``) gives its ``adcsr.json`` architecture."""
    from adcsr_jax.train.param_counts import sd_configs
    from adcsr_jax.weights import stage2_weights as sw

    m = config.model
    if m.source not in ("random", "files"):
        raise ValueError(f"config.model.source must be 'random' or 'files', got {m.source!r}")
    variant = sw.student_variant(m)
    if m.source == "random" and m.size == "tiny" and variant.taesd == sw.TAESDConfig():
        variant = dataclasses.replace(variant, taesd=sw.TINY_TAESD)  # random_stage2_weights' rule
    student = None
    if m.source == "files" and m.get("student") and Path(m.student).is_dir():
        from adcsr_jax.weights.adcsr_ckpt import read_converted_meta

        student = AdcSRConfig.from_dict(read_converted_meta(Path(m.student), "adcsr")["config"])
    return sw.abstract_stage2_weights(sd_configs(m), variant, student)


def abstract_prompt(config: Any, width: int) -> PromptWeights | None:
    """:func:`load_prompt`'s result with ``jax.ShapeDtypeStruct`` params, reading no weight file
    (RAM Swin-L 384 + SD 2.1's text encoder at full size; see
    :func:`adcsr_jax.weights.prompt_weights.abstract_prompt_weights`)."""
    from adcsr_jax.weights.prompt_weights import abstract_prompt_weights

    p = config.prompt
    if p.source == "fixed":
        return None
    if p.source != "tagger":
        raise ValueError(f"config.prompt.source must be 'fixed' or 'tagger', got {p.source!r}")
    if config.model.source == "random":
        return abstract_prompt_weights(width, tiny=config.model.size != "full")
    text_encoder = p.get("text_encoder") or (
        str(Path(config.model.sd21) / "text_encoder") if config.model.sd21 else ""
    )
    return abstract_prompt_weights(
        width, text_encoder=text_encoder or None, tokenizer=p.get("tokenizer") or None
    )


def fixed_prompt_shape(config: Any, width: int) -> tuple[int, int]:
    """The shape :func:`prompt_embedding` returns (the ``.npy`` header when the file is here)."""
    p = config.prompt
    if p.embedding and Path(p.embedding).is_file():
        shape = np.load(p.embedding, mmap_mode="r").shape
        return tuple(shape[1:] if len(shape) == 3 and shape[0] == 1 else shape)
    return int(p.length), width


_WEIGHT_TREES = ("student", "teacher", "half_stem", "sd_vae", "sd_unet")


def state_shapes(
    config: Any, weights: Any, nets: Nets, prompt: PromptWeights | None, rng: jax.Array
) -> State:
    """:func:`init_state`'s tree as ``jax.ShapeDtypeStruct`` s (``jax.eval_shape``: D's LoRA
    init and both Adam states traced, nothing allocated) from abstract or loaded weights."""
    trees = {k: getattr(weights, k) for k in _WEIGHT_TREES}
    if prompt is not None:
        trees["tagger"], trees["text"] = prompt.tagger.params, prompt.text_params
    width = nets.teacher.unet.cross_attention_dim
    fixed = jax.ShapeDtypeStruct(fixed_prompt_shape(config, width), F32) if prompt is None else None

    def init(trees: dict[str, Any], fixed: Any, rng: jax.Array) -> State:
        w = dataclasses.replace(weights, **{k: trees[k] for k in _WEIGHT_TREES})
        pr = None
        if prompt is not None:
            tagger = dataclasses.replace(prompt.tagger, params=trees["tagger"])
            pr = dataclasses.replace(prompt, tagger=tagger, text_params=trees["text"])
        return init_state(config, w, nets, rng, pr, fixed_prompt=fixed)

    return jax.eval_shape(init, trees, fixed, rng)


def same_architecture(a: Nets, b: Nets) -> bool:
    """Whether two :class:`Nets` build the same networks (the prompt path by its configs)."""
    if (a.student, a.teacher, a.disc) != (b.student, b.teacher, b.disc):
        return False
    if a.prompt is None or b.prompt is None:
        return a.prompt is b.prompt
    pa, pb = a.prompt, b.prompt
    return (
        pa.tagger.module.config == pb.tagger.module.config
        and pa.text_module.config == pb.text_module.config
        and pa.tag_tokens.table.shape == pb.tag_tokens.table.shape
    )


# -- shardings ----------------------------------------------------------------------------------


def logical_specs(nets: Nets) -> dict[str, Any]:
    """Logical ``PartitionSpec`` s of every network in the state, keyed like the state's params."""
    from adcsr_jax.models import logical_axes
    from adcsr_jax.models.discriminator import discriminator_logical_axes

    lr = jax.ShapeDtypeStruct((1, 32, 32, nets.student.image_channels), F32)
    student = logical_axes(AdcSR(nets.student), lr)
    width = nets.teacher.unet.cross_attention_dim
    text = jax.ShapeDtypeStruct((1, 1, width), F32)
    size = 2 ** (len(nets.teacher.unet.block_out_channels) - 1) * 2
    small = jax.ShapeDtypeStruct((1, size, size, 3), F32)
    teacher = logical_axes(OSEDiff(nets.teacher), small, text, method=OSEDiff.everything)
    disc = discriminator_logical_axes(nets.disc)
    return {
        "train": {
            "student": {k: student[k] for k in nets.student.trainable_keys},
            "disc": disc["trainable"],
        },
        "frozen": {
            "teacher": {"vae": teacher["vae"], "unet": teacher["unet"]},
            "half_stem": teacher.get("half_decoder", {}),
            "sd_vae": {k: teacher["vae"][k] for k in ("encoder", "quant_conv", "post_quant_conv")},
            "student_tail": {"decoder": student["decoder"]},
            "disc": disc["frozen"],
        },
    }


def _key(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


_OPT_PARAMS = {"opt_g": ("train", "student"), "opt_d": ("train", "disc")}


def state_shardings(mesh: Mesh, rules: Any, nets: Nets, state_shapes: Any) -> Any:
    """NamedShardings for the state: every param leaf by its logical axes mapped with ``rules``
    (pairs ``(logical axis, mesh axis or None)``), an axis left replicated where the mesh size
    does not divide it; Adam moments like their params; the rest replicated. No rules: all
    replicated (nothing traced)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    rules = tuple((str(a), b if b is None or isinstance(b, str) else tuple(b)) for a, b in rules)
    if not rules:
        return jax.tree.map(lambda _: replicated, state_shapes)
    flat = {
        tuple(_key(k) for k in path): spec
        for path, spec in jax.tree_util.tree_flatten_with_path(
            logical_specs(nets), is_leaf=lambda x: isinstance(x, PartitionSpec)
        )[0]
    }

    def lookup(keys: tuple[str, ...]) -> PartitionSpec | None:
        if keys in flat:
            return flat[keys]
        if len(keys) > 1 and keys[1] in _OPT_PARAMS:
            for i, k in enumerate(keys):
                if k in ("mu", "nu"):
                    return flat.get((*_OPT_PARAMS[keys[1]], *keys[i + 1 :]))
        return None

    def one(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        names = lookup(tuple(_key(k) for k in path))
        if names is None or len(names) != len(leaf.shape):
            return replicated
        table = dict(rules)
        used: set[str] = set()
        fixed = []
        for size, name in zip(leaf.shape, names):
            axis = table.get(name) if name is not None else None
            axes = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
            axes = tuple(a for a in axes if a not in used)  # a mesh axis shards one dim only
            n = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
            if not axes or size % n:
                fixed.append(None)
                continue
            used.update(axes)
            fixed.append(axes[0] if len(axes) == 1 else axes)
        return NamedSharding(mesh, PartitionSpec(*fixed))

    return jax.tree_util.tree_map_with_path(one, state_shapes)


# -- evaluation and export ----------------------------------------------------------------------


def eval_dirs(ev: Any) -> tuple[Path, Path]:
    """``(lr_dir, hr_dir)`` of ``config.eval``: two folders, or ``lr_dir='sample:val'``: the
    held-out sample photos' centre ``eval.crop`` crops and their ``adcsr`` degradations (seeded),
    written once under ``<$ADCSR_CACHE>/sample_pairs/<crop>``."""
    if ev.lr_dir != "sample:val":
        return Path(ev.lr_dir), Path(ev.hr_dir)
    from adcsr_jax.data.sample_set import sample_pairs
    from adcsr_jax.weights.metrics import default_cache_dir

    crop = int(ev.get("crop", 128))
    return sample_pairs(default_cache_dir() / "sample_pairs" / str(crop), crop)


def _pairs(lr_dir: Path, hr_dir: Path, limit: int) -> list[tuple[Path, Path]]:
    from adcsr_jax.image_io import list_images

    hr = {p.stem: p for p in list_images(hr_dir)}
    lr = list_images(lr_dir)
    missing = [p.name for p in lr if p.stem not in hr]
    if missing:
        raise ValueError(f"eval: {len(missing)} LR images in {lr_dir} have no HR in {hr_dir}: "
                         f"{', '.join(missing[:5])}")  # fmt: skip
    pairs = [(p, hr[p.stem]) for p in lr]
    return pairs[:limit] if limit > 0 else pairs


def make_evaluate(
    config: Any, nets: Nets
) -> Callable[..., tuple[dict[str, float], dict[str, Any]]]:
    """Held-out evaluation: the student's full path (``AdcSR.__call__``) on every LR image of
    ``config.eval.lr_dir``, PSNR / LPIPS / DISTS against ``config.eval.hr_dir`` through
    :func:`adcsr_jax.eval.evaluator.evaluate`, and LR | teacher | student | HR grids (teacher
    and student features decoded through the frozen tail, colour-fixed like the student)."""
    student_module = AdcSR(nets.student)
    ev = config.eval

    @jax.jit
    def run(train: Any, frozen: Any, lq01: jax.Array) -> tuple[jax.Array, jax.Array]:
        lq = lq01 * 2 - 1
        params = {**train["student"], **frozen["student_tail"]}
        sr = student_module.apply({"params": params}, lq)
        f_t = teacher_features(nets, frozen, lq, batch_prompts(nets, frozen, lq01)[0])
        tail = {"params": params}
        teacher = finish(student_module.apply(tail, f_t.astype(nets.student.dtype),
                                              method=AdcSR.decode), lq)  # fmt: skip
        return sr, teacher

    def evaluate(state: State, step: int, workdir: Path) -> tuple[dict[str, float], dict[str, Any]]:
        from adcsr_jax.eval.evaluator import evaluate as evaluate_folder
        from adcsr_jax.image_io import read_image, write_png
        from adcsr_jax.imageops import to_uint8
        from adcsr_jax.tiling import pad_to_multiple

        out = Path(workdir) / "eval" / f"step_{step}"
        sr_dir = out / "sr"
        sr_dir.mkdir(parents=True, exist_ok=True)
        grids = {}
        lr_dir, hr_dir = eval_dirs(ev)
        for i, (lr_path, hr_path) in enumerate(_pairs(lr_dir, hr_dir, ev.limit)):
            lr = read_image(lr_path)
            h, w = lr.shape[:2]
            padded = jnp.asarray(pad_to_multiple(lr[None], 16))
            sr, teacher = (np.asarray(a)[0, : 4 * h, : 4 * w]
                           for a in run(state["train"], state["frozen"], padded))  # fmt: skip
            if jax.process_index() == 0:
                write_png(sr_dir / f"{lr_path.stem}.png", sr)
            if i < ev.num_grids:
                hr = read_image(hr_path)
                up = np.repeat(np.repeat(lr, 4, 0), 4, 1)
                if hr.shape != sr.shape:
                    raise ValueError(f"eval: {hr_path} is {hr.shape[:2]}, expected 4x the LR "
                                     f"{lr_path} = {sr.shape[:2]}")  # fmt: skip
                grids[f"eval/grid_{lr_path.stem}"] = to_uint8(
                    np.concatenate([up, teacher, sr, hr], axis=1)
                )[None]
        result = evaluate_folder(
            sr_dir, hr_dir, metrics=list(ev.metrics), workdir=out,
            weights_dir=ev.get("weights_dir") or None, progress=False,
            dataset=ev.lr_dir if ev.lr_dir == "sample:val" else lr_dir.parent.name,
            method=f"AdcSR student ({config.get('variant', '')}, step {step})",
        )  # the summary table in eval/step_N names the variant  # fmt: skip
        for name, reason in result.skipped.items():
            log.warning("eval: %s skipped: %s", name, reason)
        return {f"eval/{k}": float(v) for k, v in result.summary.items()}, grids

    return evaluate


def student_params(state: State) -> dict[str, Any]:
    """The full student params (trainable half + frozen tail) of a stage-2 state, on the host."""
    tree = {**state["train"]["student"], **state["frozen"]["student_tail"]}
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), tree)


def export_disc(nets: Nets, state: State, out: Path) -> list[Path]:
    """D's three adapters as PEFT ``save_pretrained`` folders, plus its trained conv_in under
    PEFT's base-layer names (``conv_in.base_layer.{weight,bias}``, ``conv_in.safetensors``)."""
    from adcsr_jax.models.discriminator import discriminator_unet_params
    from adcsr_jax.weights.io import write_safetensors
    from adcsr_jax.weights.lora_peft import save_peft_adapters
    from adcsr_jax.weights.mapping import params_to_torch

    trainable = jax.device_get(state["train"]["disc"])
    base = discriminator_unet_params(trainable, jax.device_get(state["frozen"]["disc"]))
    paths = save_peft_adapters(out, trainable["lora"], nets.disc.specs, base)
    if trainable["unet"]:
        tensors = {k.replace("conv_in.", "conv_in.base_layer.", 1): v
                   for k, v in params_to_torch(trainable["unet"]).items()}  # fmt: skip
        write_safetensors(out / "conv_in.safetensors", tensors, {"format": "pt"})
        paths.append(out / "conv_in.safetensors")
    return paths


def make_export(config: Any, nets: Nets) -> Callable[[State, Path], list[Path]]:
    """Writes ``<workdir>/student/`` (our converted folder: ``adcsr infer --weights``), the
    official layout under ``<workdir>/official/`` (``net_params_<step>.pkl`` + ``halfDecoder.ckpt``)
    and D's adapters in PEFT naming under ``<workdir>/discriminator_lora/``."""
    student_cfg = nets.student.replace(dtype="float32", remat=False)

    def export(state: State, workdir: Path) -> list[Path]:
        from adcsr_jax.weights.adcsr_ckpt import save_student
        from adcsr_jax.weights.official_export import export_official

        workdir = Path(workdir)
        step = int(jax.device_get(state["train"]["opt_g"].count))
        student_dir = save_student(workdir / "student", student_cfg, student_params(state))
        paths = [student_dir]
        if config.export.official:
            stem = jax.device_get(state["frozen"]["half_stem"])
            paths += export_official(
                student_dir, workdir / "official", step=step, half_decoder_stem=stem
            )
        if config.export.disc_peft:
            paths += export_disc(nets, state, workdir / "discriminator_lora")
        return paths

    return export


# -- build --------------------------------------------------------------------------------------


def build(config: Any, mesh: Mesh) -> Stage:
    """The stage-2 :class:`~adcsr_jax.train.stage.Stage` for ``config`` (``configs/stage2.py``).

    Nothing is read here: ``init`` loads the weights; ``shapes`` (``adcsr plan``) derives the
    state from the architectures alone (:func:`abstract_weights`, :func:`abstract_prompt`). The
    step, shardings, evaluation and export use the loaded weights' architectures once ``init``
    ran (the loop calls it first), else the derived ones; ``init`` raises if the weights'
    differ from architectures already used."""
    cache: dict[str, Any] = {}

    def weights() -> tuple[Any, PromptWeights | None]:
        if "w" not in cache:
            w = load_weights(config)
            width = w.teacher_config.unet.cross_attention_dim
            cache["w"] = (w, load_prompt(config, width))
        return cache["w"]

    def abstract() -> tuple[Any, PromptWeights | None]:
        if reads_files_for_shapes(config):
            return weights()
        if "abstract" not in cache:
            w = abstract_weights(config)
            cache["abstract"] = (
                w,
                abstract_prompt(config, w.teacher_config.unet.cross_attention_dim),
            )
        return cache["abstract"]

    def nets() -> Nets:
        if "nets" not in cache:
            cache["nets"] = build_nets(config, *(cache["w"] if "w" in cache else abstract()))
        return cache["nets"]

    def init(rng: jax.Array) -> State:
        with jax.ensure_compile_time_eval():  # loaded eagerly under jax.eval_shape(init) too
            w, prompt = weights()
        loaded = build_nets(config, w, prompt)
        if "nets" in cache and not same_architecture(cache["nets"], loaded):
            raise ValueError(
                "stage2: the loaded weights' architectures differ from those derived from the "
                f"config (used before init): {loaded.student} vs {cache['nets'].student}"
            )
        cache.setdefault("nets", loaded)
        state = init_state(config, w, cache["nets"], rng, prompt)
        cache.pop("w")  # the state now owns the arrays
        return state

    def shapes() -> State:
        from adcsr_jax.train.loop import init_rng

        w, prompt = abstract()
        return state_shapes(config, w, nets(), prompt, init_rng(int(config.seed)))

    def step(state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        return make_step(config, nets())(state, batch, rng)

    made: dict[str, Callable[..., Any]] = {}

    def evaluate(state: State, step: int, workdir: Path) -> tuple[dict[str, float], dict]:
        if "evaluate" not in made:  # one jitted function for every evaluation
            made["evaluate"] = make_evaluate(config, nets())
        return made["evaluate"](state, step, workdir)

    def export(state: State, workdir: Path) -> list[Path]:
        return make_export(config, nets())(state, workdir)

    def prepare(frozen: Any, batch: Batch) -> dict[str, jax.Array]:
        return prepare_prompts(nets(), frozen, batch)

    per_batch = prompt_program(config) == "batch"
    lr_dir = config.eval.get("lr_dir")
    has_eval = lr_dir == "sample:val" or (bool(lr_dir) and bool(config.eval.get("hr_dir")))
    return Stage(
        name=NAME,
        init=init,
        shardings=lambda shapes: state_shardings(mesh, _rules(config), nets(), shapes),
        step=step,
        batch_keys=BATCH_KEYS,
        evaluate=evaluate if has_eval else None,
        export=export,
        hparams=hparams(config),
        shapes=shapes,
        prepare=prepare if per_batch else None,
    )


def prompt_program(config: Any) -> str | None:
    """Where the tagger prompts are computed: ``"batch"`` (their own program per batch, before
    the step: the default, measured faster), ``"step"`` (inside the step, as ``train.py``), or
    None with fixed prompts (``config.prompt.source='fixed'``)."""
    if config.prompt.source != "tagger":
        return None
    program = config.prompt.get("program", "batch")
    if program not in ("batch", "step"):
        raise ValueError(f"config.prompt.program must be 'batch' or 'step', got {program!r}")
    return program


def _rules(config: Any) -> tuple:
    """``config.sharding.rules`` (the engine's field), else ``config.rules``, else none."""
    sharding = config.get("sharding")
    if sharding is not None and "rules" in sharding:
        return tuple(sharding.rules)
    return tuple(config.get("rules", ()))


def hparams(config: Any) -> dict[str, Any]:
    """Flat scalar hyper-parameters for the metric writer."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(name + ".", value)
            elif isinstance(value, bool | int | float | str):
                flat[name] = value

    walk("", config.to_dict() if hasattr(config, "to_dict") else dict(config))
    return flat
