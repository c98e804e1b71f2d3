"""Stage 1 of AdcSR: pretrain the 50%-width VAE decoder on frozen SD 2.1 latents.

AdcSR (CVPR 2025, Algorithm 1) first restores the decoding ability of the channel-pruned decoder,
then distils. No code was released (AdcSR issue #4); its README points to latent-diffusion, so
the loss is latent-diffusion's ``LPIPSWithDiscriminator``
(``ldm/modules/losses/contperceptual.py``) with taming-transformers' ``NLayerDiscriminator``,
``hinge_d_loss`` and ``adopt_weight`` (``taming/modules/losses/vqperceptual.py``), and the
update order of latent-diffusion's ``AutoencoderKL.training_step`` under PyTorch Lightning 1.4
(one optimizer after the other on the same batch).

Dataflow (NHWC, x in [-1, 1]): x -> frozen SD encoder -> quant_conv -> posterior **mean**
(unscaled) -> frozen SD ``post_quant_conv`` -> half decoder (widths 64/128/256/256, every
parameter trainable) -> x_hat. This is the path AdcSR's ``train.py`` later uses for f_R.

One ``step`` on a batch (ldm's two ``training_step`` calls):

1. generator: ``rec = |x - x_hat| + perceptual_weight * LPIPS_vgg(x, x_hat)`` (per pixel, LPIPS
   broadcast), ``nll = sum(rec / exp(logvar) + logvar) / B``, ``g = -mean D(x_hat)`` (D in
   training mode: batch statistics, running stats updated),
   ``d_weight = clip(|grad_W nll| / (|grad_W g| + 1e-4), 0, 1e4) * disc_weight`` at
   ``W = decoder.conv_out.kernel``, detached; ``loss = nll + d_weight * factor * g`` with
   ``factor = adopt_weight(disc_factor, step, disc_start)`` (0 before ``disc_start``). No KL term:
   the encoder is frozen and the mean is decoded, so ldm's ``kl_weight * KL`` is a constant
   without gradient. Adam update of the decoder (and of logvar when ``train_logvar``).
2. discriminator: ``x_hat`` recomputed with the *updated* decoder (ldm runs ``self(inputs)``
   again for ``optimizer_idx=1``), ``d = factor * 0.5 * (mean relu(1 - D(x)) + mean relu(1 +
   D(x_hat)))``, D called separately on real and fake batches (two sets of batch statistics);
   Adam update of D. Before ``disc_start`` D's gradient is zero, yet Adam's step count advances,
   exactly as torch's Adam does with zero gradients.

``logvar``: ldm makes it an ``nn.Parameter`` but ``AutoencoderKL.configure_optimizers`` never
gives it to an optimizer, so in SD's recipe it stays at ``logvar_init`` (0). ``train_logvar``
(default False) follows that; True trains it with the decoder's Adam.

Gradient accumulation (``micro_batches``): the generator's gradients (each micro-batch with its
own adaptive weight and D batch statistics, as Lightning's per-micro-batch closures) are averaged
before one update, then D's. Lightning interleaves G and D per micro-batch instead; with
``micro_batches = 1`` (the tests) the two are identical.

Tiny-decoder ablation (AdcSR supplement Table B.1 row 2, ``model.decoder = "taesd"``): the
decoder trained is TAESD's (``models.taesd``; init ``scratch`` or ``checkpoint`` = TAESD's
published ``taesd_decoder.pth`` / an ``AutoencoderTiny`` file), reading the *scaled* SD latent
``0.18215 * mean`` (TAESD's input space, no ``post_quant_conv``); the adaptive weight is taken at
its output conv (``TAESDConfig.last_layer``). Export: ``<workdir>/taesd_decoder.safetensors``
(diffusers ``decoder.layers.*`` names), what the stage-2 ablation reads as ``model.taesd_decoder``.

State (see ``adcsr_jax.train.stage``)::

    {"train":  {"step", "decoder", "logvar", "disc", "disc_batch_stats", "opt_g", "opt_d"},
     "frozen": {"sd_encoder", "sd_quant", "post_quant_conv", "lpips"}}
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# The one place LPIPS is imported from (its home moves with the package layout).
from adcsr_jax.eval import lpips as lpips_lib
from adcsr_jax.eval.psnr import psnr_y
from adcsr_jax.imageops import to_uint8
from adcsr_jax.models.adcsr import random_params
from adcsr_jax.models.patchgan import NLayerDiscriminator
from adcsr_jax.models.taesd import TAESDConfig, TAESDDecoder, abstract_taesd_params
from adcsr_jax.models.vae import AutoencoderKL, Decoder, VAEConfig
from adcsr_jax.train.accumulate import split_micro_batches
from adcsr_jax.train.stage import Batch, Metrics, Stage, State
from adcsr_jax.weights import half_decoder as hd
from adcsr_jax.weights.loaders import load_vae
from adcsr_jax.weights.networks import decoder_template, vae_template

log = logging.getLogger(__name__)

NAME = "stage1"
SAMPLE_PREFIX = "sample:"
# torchvision VGG16 ``features`` conv widths (LPIPS-VGG's backbone), for random tiny weights.
VGG16_CONVS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
LPIPS_VGG_TAPS = (64, 128, 256, 512, 512)
FSDP_MIN_SIZE = 2**18  # leaves at least this large are sharded over 'fsdp'


# ----------------------------------------------------------------------------- networks
@dataclasses.dataclass(frozen=True)
class Networks:
    """The modules of stage 1 (configs only; parameters live in the state).

    ``taesd`` set: the decoder trained is TAESD's tiny decoder (``half`` is then unused).
    """

    sd: VAEConfig
    half: VAEConfig
    disc: NLayerDiscriminator
    taesd: TAESDConfig | None = None

    @property
    def sd_vae(self) -> AutoencoderKL:
        return AutoencoderKL(self.sd)

    @property
    def decoder(self) -> Decoder | TAESDDecoder:
        return Decoder(self.half) if self.taesd is None else TAESDDecoder(self.taesd)

    @property
    def last_layer(self) -> str:
        """Param name of the decoder's output conv (the adaptive weight's layer)."""
        return "conv_out" if self.taesd is None else self.taesd.last_layer

    def decoder_template(self) -> Any:
        if self.taesd is None:
            return decoder_template(self.half)
        return abstract_taesd_params(self.taesd)


def sd_vae_config(config: Any) -> VAEConfig:
    m = config.model
    return VAEConfig(
        block_out_channels=tuple(m.sd_block_out_channels),
        layers_per_block=int(m.layers_per_block),
        norm_num_groups=int(m.norm_num_groups),
        dtype=m.dtype,
        attention_query_chunk=m.get("attention_query_chunk"),
        conv_matmul_max_pixels=m.get("conv_matmul_max_pixels"),
    )


def networks(config: Any) -> Networks:
    sd = sd_vae_config(config)
    half = hd.half_decoder_config(sd, float(config.model.ratio))
    loss = config.loss
    disc = NLayerDiscriminator(3, int(loss.disc_ndf), int(loss.disc_num_layers))
    m = config.model
    kind = str(m.get("decoder", "pruned"))
    if kind not in ("pruned", "taesd"):
        raise ValueError(f"config.model.decoder must be 'pruned' or 'taesd', got {kind!r}")
    taesd = None
    if kind == "taesd":
        taesd = TAESDConfig(
            latent_channels=sd.latent_channels,
            channels=int(m.get("taesd_channels", 64)),
            num_blocks=tuple(m.get("taesd_num_blocks", (3, 3, 3, 1))),
            dtype=m.dtype,
            conv_matmul_max_pixels=m.get("conv_matmul_max_pixels"),
        )
    return Networks(sd, half, disc, taesd)


def encode_latents(nets: Networks, frozen: Mapping[str, Any], x: jax.Array) -> jax.Array:
    """x in [-1, 1] -> what the trained decoder reads: ``post_quant_conv(mean)`` (unscaled) for
    the half decoder; ``scaling_factor * mean`` for TAESD."""
    if nets.taesd is not None:
        return sd_latents(nets, frozen, x)[0]
    return sd_latents(nets, frozen, x)[1]


def sd_latents(nets: Networks, frozen: Mapping[str, Any], x: jax.Array) -> tuple[jax.Array, ...]:
    """``(scaled mean, post_quant_conv(mean))`` of x in [-1, 1] (TAESD's and SD's decoder inputs)."""
    params = {
        "encoder": frozen["sd_encoder"],
        "quant_conv": frozen["sd_quant"],
        "post_quant_conv": frozen["post_quant_conv"],
    }
    vae = nets.sd_vae
    mean, _ = vae.apply({"params": params}, x, method=AutoencoderKL.encode)
    post = vae.apply({"params": params}, mean, method=AutoencoderKL.post_quant)
    return mean.astype(jnp.float32) * nets.sd.scaling_factor, post.astype(jnp.float32)


def _decoder_body(m: Decoder | TAESDDecoder, z: jax.Array) -> jax.Array:
    if isinstance(m, TAESDDecoder):
        return m.body(z)
    h = m.stem(z)
    for block in m.up_blocks:
        h = block(h)
    return nn.silu(m.conv_norm_out(h))


def _decoder_out(m: Decoder | TAESDDecoder, h: jax.Array) -> jax.Array:
    if isinstance(m, TAESDDecoder):
        return m.head(h)
    return m.conv_out(h)


def decode(nets: Networks, params: Any, z: jax.Array) -> jax.Array:
    return nets.decoder.apply({"params": params}, z).astype(jnp.float32)


# ----------------------------------------------------------------------------- losses
def lpips_vgg(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """taming's ``LPIPS()`` on images in [-1, 1]: per-image distance, shape (B,)."""
    return lpips_lib.lpips_distance(params, (x + 1.0) * 0.5, (y + 1.0) * 0.5, net="vgg")


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """taming ``hinge_d_loss``: 0.5 (mean relu(1 - real) + mean relu(1 + fake))."""
    return 0.5 * (
        jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake))
    )


def vanilla_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """taming ``vanilla_d_loss``: 0.5 (mean softplus(-real) + mean softplus(fake))."""
    return 0.5 * (jnp.mean(jax.nn.softplus(-logits_real)) + jnp.mean(jax.nn.softplus(logits_fake)))


D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


def adopt_weight(weight: float, step: jax.Array, threshold: int) -> jax.Array:
    """taming ``adopt_weight``: ``weight``, or 0 while ``step < threshold``."""
    return jnp.where(step < threshold, 0.0, weight).astype(jnp.float32)


def nll_loss(x, x_hat, logvar, lpips_params, perceptual_weight):
    """ldm's NLL: ``sum(rec / exp(logvar) + logvar) / B`` and ``(mean rec, mean l1, mean lpips)``."""
    l1 = jnp.abs(x - x_hat)
    rec = l1
    p = jnp.zeros((x.shape[0],), jnp.float32)
    if perceptual_weight > 0:
        p = lpips_vgg(lpips_params, x, x_hat)
        rec = rec + perceptual_weight * p[:, None, None, None]
    nll = jnp.sum(rec / jnp.exp(logvar) + logvar) / x.shape[0]
    return nll, (jnp.mean(rec), jnp.mean(l1), jnp.mean(p))


# ----------------------------------------------------------------------------- optimizers
def learning_rate(config: Any) -> float:
    """latent-diffusion ``main.py``: ``accumulate_grad_batches * ngpu * batch_size * base_lr``,
    i.e. ``base_lr`` x the global batch of one update (``scale_lr``); else ``base_lr``."""
    o = config.optim
    if o.scale_lr:
        return float(o.base_lr) * int(config.data.batch_size)
    return float(o.base_lr)


def optimizers(config: Any) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(opt_g over {"decoder", "logvar"}, opt_d): torch Adam, betas (0.5, 0.9), eps 1e-8."""
    o = config.optim
    lr = learning_rate(config)

    def adam() -> optax.GradientTransformation:
        return optax.adam(lr, b1=float(o.b1), b2=float(o.b2), eps=float(o.eps))

    logvar_tx = adam() if config.loss.train_logvar else optax.set_to_zero()
    opt_g = optax.multi_transform(
        {"decoder": adam(), "logvar": logvar_tx}, {"decoder": "decoder", "logvar": "logvar"}
    )
    return opt_g, adam()


# ----------------------------------------------------------------------------- init
def torch_default_params(template: Any, seed: int) -> Any:
    """Decoder "from scratch" as torch initialises diffusers' ``Decoder``: conv/linear weight and
    bias U(+-1/sqrt(fan_in)) (kaiming_uniform(a=sqrt(5))), GroupNorm weight 1 and bias 0."""
    rng = np.random.default_rng(seed)
    flat = {}
    kernels = {
        path[:-1]: leaf.shape
        for path, leaf in traverse_util.flatten_dict(template).items()
        if path[-1] == "kernel"
    }
    for path, leaf in traverse_util.flatten_dict(template).items():
        shape = leaf.shape
        if path[-1] == "scale":
            flat[path] = np.ones(shape, np.float32)
        elif path[-1] == "bias" and path[:-1] not in kernels:
            flat[path] = np.zeros(shape, np.float32)
        else:
            fan_in = int(np.prod(kernels[path[:-1]][:-1]))
            bound = 1.0 / np.sqrt(fan_in)
            flat[path] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return traverse_util.unflatten_dict(flat)


def random_lpips_vgg(seed: int) -> dict[str, np.ndarray]:
    """Random LPIPS-VGG params (He-normal convs, U(0, 0.1) heads) for tiny configs and tests."""
    rng = np.random.default_rng(seed)
    params, cin = {}, 3
    for i, cout in enumerate(VGG16_CONVS):
        std = np.sqrt(2.0 / (9 * cin))
        params[f"conv{i}_kernel"] = rng.normal(0, std, (3, 3, cin, cout)).astype(np.float32)
        params[f"conv{i}_bias"] = rng.normal(0, 0.01, cout).astype(np.float32)
        cin = cout
    for i, c in enumerate(LPIPS_VGG_TAPS):
        params[f"lin{i}"] = rng.uniform(0, 0.1, c).astype(np.float32)
    return params


def load_sd_vae(config: Any, nets: Networks) -> dict[str, Any]:
    """SD VAE params (numpy): the diffusers folder ``model.sd_vae``, or random when it is ''."""
    path = config.model.sd_vae
    if path:
        _, params = load_vae(path, config=nets.sd)
        return jax.tree.map(np.asarray, params)
    return jax.tree.map(np.asarray, random_params(vae_template(nets.sd), int(config.model.seed)))


def init_decoder(config: Any, nets: Networks, sd_params: Mapping[str, Any]) -> Any:
    """``model.decoder_init``: "prune" (leading 50% of SD's decoder), "scratch" or "checkpoint"."""
    mode = config.model.decoder_init
    if nets.taesd is not None and mode == "prune":
        raise ValueError("config.model.decoder='taesd' cannot be pruned from SD's decoder: use "
                         "decoder_init 'scratch' or 'checkpoint' (TAESD's taesd_decoder.pth)")  # fmt: skip
    if mode == "prune":
        return hd.prune_decoder_params(sd_params["decoder"], nets.half, float(config.model.ratio))
    if mode == "scratch":
        return torch_default_params(nets.decoder_template(), int(config.model.seed) + 1)
    if mode == "checkpoint" and nets.taesd is not None:
        from adcsr_jax.weights.taesd import load_taesd_decoder  # noqa: PLC0415

        return load_taesd_decoder(config.model.decoder_checkpoint, nets.taesd)[1]
    if mode == "checkpoint":
        _, params = hd.load_half_decoder(config.model.decoder_checkpoint, nets.half)
        return params
    raise ValueError(
        f"config.model.decoder_init must be 'prune', 'scratch' or 'checkpoint', got {mode!r}"
    )


def init_disc(nets: Networks, seed: int) -> tuple[Any, Any]:
    x = jnp.zeros((1, 64, 64, 3), jnp.float32)
    variables = jax.jit(lambda k: nets.disc.init(k, x, True))(jax.random.key(seed))
    return variables["params"], variables["batch_stats"]


def load_lpips(config: Any) -> dict[str, Any]:
    src = config.loss.lpips_weights
    if src == "random":
        return random_lpips_vgg(int(config.model.seed) + 2)
    return {k: np.asarray(v) for k, v in lpips_lib.load_lpips_params("vgg", src or None).items()}


def assemble_state(
    config: Any,
    nets: Networks,
    sd: Mapping[str, Any],
    decoder: Any,
    disc: tuple[Any, Any],
    lpips: Mapping[str, Any],
) -> State:
    """The state from the SD VAE params, the decoder's start, D's (params, batch stats) and
    LPIPS-VGG (host arrays from :func:`make_init`, or shapes under ``jax.eval_shape``)."""
    opt_g, opt_d = optimizers(config)
    logvar = jnp.asarray(float(config.loss.logvar_init), jnp.float32)
    g_params = {"decoder": jax.tree.map(jnp.asarray, decoder), "logvar": logvar}
    train = {
        "step": jnp.zeros((), jnp.int32),
        "decoder": g_params["decoder"],
        "logvar": logvar,
        "disc": disc[0],
        "disc_batch_stats": disc[1],
        "opt_g": opt_g.init(g_params),
        "opt_d": opt_d.init(disc[0]),
    }
    frozen = {
        "sd_encoder": sd["encoder"],
        "sd_quant": sd["quant_conv"],
        "post_quant_conv": sd["post_quant_conv"],
        "lpips": dict(lpips),
    }
    return {"train": train, "frozen": frozen}


def make_init(config: Any, nets: Networks):
    def init(rng: jax.Array) -> State:
        del rng  # weights come from files or from config.model.seed (host-side numpy)
        sd = load_sd_vae(config, nets)
        decoder = init_decoder(config, nets, sd)
        disc = init_disc(nets, int(config.model.seed) + 3)
        return assemble_state(config, nets, sd, decoder, disc, load_lpips(config))

    return init


def lpips_vgg_shapes() -> dict[str, jax.ShapeDtypeStruct]:
    """LPIPS-VGG's params as shapes (:func:`random_lpips_vgg`'s and the converted file's keys)."""
    out, cin = {}, 3
    for i, cout in enumerate(VGG16_CONVS):
        out[f"conv{i}_kernel"] = jax.ShapeDtypeStruct((3, 3, cin, cout), jnp.float32)
        out[f"conv{i}_bias"] = jax.ShapeDtypeStruct((cout,), jnp.float32)
        cin = cout
    for i, c in enumerate(LPIPS_VGG_TAPS):
        out[f"lin{i}"] = jax.ShapeDtypeStruct((c,), jnp.float32)
    return out


def state_shapes(config: Any, nets: Networks) -> State:
    """``init``'s tree as ``jax.ShapeDtypeStruct`` s from the architectures (``adcsr plan``):
    no SD VAE, decoder checkpoint or LPIPS file is read, nothing is allocated."""
    sd = vae_template(nets.sd)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)

    def state(sd: Any, decoder: Any, lpips: Any) -> State:
        v = nets.disc.init(jax.random.key(int(config.model.seed) + 3), jnp.zeros(x.shape), True)
        return assemble_state(config, nets, sd, decoder, (v["params"], v["batch_stats"]), lpips)

    return jax.eval_shape(state, sd, nets.decoder_template(), lpips_vgg_shapes())


# ----------------------------------------------------------------------------- step
def make_step(config: Any, nets: Networks):
    loss_cfg = config.loss
    pw = float(loss_cfg.perceptual_weight)
    disc_weight = float(loss_cfg.disc_weight)
    disc_factor = float(loss_cfg.disc_factor)
    disc_start = int(loss_cfg.disc_start)
    if loss_cfg.disc_loss not in D_LOSSES:
        raise ValueError(f"config.loss.disc_loss must be one of {sorted(D_LOSSES)}")
    d_loss_fn = D_LOSSES[loss_cfg.disc_loss]
    n_micro = int(config.optim.get("micro_batches", 1))
    opt_g, opt_d = optimizers(config)
    lr = learning_rate(config)
    dec_mod, disc_mod = nets.decoder, nets.disc
    last = nets.last_layer

    def disc_apply(params, stats, x):
        logits, upd = disc_mod.apply(
            {"params": params, "batch_stats": stats}, x, True, mutable=["batch_stats"]
        )
        return logits, upd["batch_stats"]

    def g_micro(dec, logvar, disc, stats, lpips_p, x, z, factor):
        body = lambda p: dec_mod.apply({"params": p}, z, method=_decoder_body)  # noqa: E731
        h, body_vjp = jax.vjp(body, dec)
        out = lambda po, hh: dec_mod.apply({"params": {last: po}}, hh, method=_decoder_out)  # noqa: E731
        x_hat, out_vjp = jax.vjp(out, dec[last], h)
        out_dtype = x_hat.dtype  # the compute dtype: what out_vjp's cotangents must be
        x_hat = x_hat.astype(jnp.float32)
        (nll, (rec, l1, p)), (ct_nll, g_logvar) = jax.value_and_grad(
            nll_loss, argnums=(1, 2), has_aux=True
        )(x, x_hat, logvar, lpips_p, pw)

        def g_fn(xh):
            logits, new_stats = disc_apply(disc, stats, xh)
            return -jnp.mean(logits), new_stats

        (g_loss, new_stats), ct_g = jax.value_and_grad(g_fn, has_aux=True)(x_hat)
        ct_nll = ct_nll.astype(out_dtype)
        ct_g = ct_g.astype(out_dtype)
        if disc_factor > 0:
            gk_nll = out_vjp(ct_nll)[0]["kernel"]
            gk_g = out_vjp(ct_g)[0]["kernel"]
            d_weight = jnp.linalg.norm(gk_nll.ravel()) / (jnp.linalg.norm(gk_g.ravel()) + 1e-4)
            d_weight = jax.lax.stop_gradient(jnp.clip(d_weight, 0.0, 1e4)) * disc_weight
        else:
            d_weight = jnp.zeros((), jnp.float32)
        ct = ct_nll + (d_weight * factor).astype(ct_nll.dtype) * ct_g
        g_out, g_h = out_vjp(ct)
        (g_dec,) = body_vjp(g_h)
        g_dec = {**g_dec, last: g_out}
        grads = {"decoder": g_dec, "logvar": g_logvar}
        metrics = {
            "loss/total": nll + d_weight * factor * g_loss,
            "loss/nll": nll,
            "loss/rec": rec,
            "loss/l1": l1,
            "loss/lpips": p,
            "loss/g": g_loss,
            "adaptive_weight": d_weight,
        }
        return grads, new_stats, metrics

    def d_micro(disc, stats, x, x_hat, factor):
        def loss(dp):
            real, s = disc_apply(dp, stats, x)
            fake, s = disc_apply(dp, s, x_hat)
            return factor * d_loss_fn(real, fake), (s, jnp.mean(real), jnp.mean(fake))

        (d_loss, (s, real, fake)), grads = jax.value_and_grad(loss, has_aux=True)(disc)
        return grads, s, {"loss/d": d_loss, "d/logits_real": real, "d/logits_fake": fake}

    def scan_micro(fn, stats, xs):
        """Sequential micro-batches: carry D's running stats, average grads and metrics."""
        if n_micro <= 1:
            return fn(stats, xs)

        def body(carry, mb):
            st, acc = carry
            grads, st, metrics = fn(st, mb)
            out = (grads, metrics)
            acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
            return (st, acc), None

        first = jax.tree.map(lambda a: a[0], xs)
        rest = jax.tree.map(lambda a: a[1:], xs)
        g0, stats, m0 = fn(stats, first)
        (stats, (g, m)), _ = jax.lax.scan(body, (stats, (g0, m0)), rest)
        mean = lambda t: jax.tree.map(lambda a: a / n_micro, t)  # noqa: E731
        return mean(g), stats, mean(m)

    def step(state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        del rng  # deterministic: the encoder mean is decoded, no dropout
        t, f = state["train"], state["frozen"]
        x = batch["gt"].astype(jnp.float32) * 2.0 - 1.0
        z = jax.lax.stop_gradient(encode_latents(nets, f, x))
        factor = adopt_weight(disc_factor, t["step"], disc_start)
        xs = {"x": x, "z": z}
        if n_micro > 1:
            xs = split_micro_batches(xs, n_micro)

        def g_fn(stats, mb):
            return g_micro(t["decoder"], t["logvar"], t["disc"], stats, f["lpips"],
                           mb["x"], mb["z"], factor)  # fmt: skip

        g_grads, stats, g_metrics = scan_micro(g_fn, t["disc_batch_stats"], xs)
        g_params = {"decoder": t["decoder"], "logvar": t["logvar"]}
        updates, opt_g_state = opt_g.update(g_grads, t["opt_g"], g_params)
        g_params = optax.apply_updates(g_params, updates)

        def d_fn(st, mb):
            x_hat = jax.lax.stop_gradient(decode(nets, g_params["decoder"], mb["z"]))
            return d_micro(t["disc"], st, mb["x"], x_hat, factor)

        d_grads, stats, d_metrics = scan_micro(d_fn, stats, xs)
        d_updates, opt_d_state = opt_d.update(d_grads, t["opt_d"], t["disc"])
        disc = optax.apply_updates(t["disc"], d_updates)
        new_train = {
            "step": t["step"] + 1,
            "decoder": g_params["decoder"],
            "logvar": g_params["logvar"],
            "disc": disc,
            "disc_batch_stats": stats,
            "opt_g": opt_g_state,
            "opt_d": opt_d_state,
        }
        metrics = {
            **g_metrics,
            **d_metrics,
            "disc_factor": factor,
            "logvar": t["logvar"],
            "grad_norm/g": optax.global_norm(g_grads["decoder"]),
            "grad_norm/logvar": jnp.abs(g_grads["logvar"]),
            "grad_norm/d": optax.global_norm(d_grads),
            "lr/g": jnp.asarray(lr, jnp.float32),
            "lr/d": jnp.asarray(lr, jnp.float32),
        }
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return {"train": new_train, "frozen": f}, metrics

    return step


# ----------------------------------------------------------------------------- shardings
def make_shardings(mesh: Mesh, min_size: int = FSDP_MIN_SIZE):
    """Replicated, except leaves of at least ``min_size`` elements (``sharding.fsdp_min_size``):
    their largest axis that the ``fsdp`` mesh axis divides is sharded over it (FSDP-style; a
    no-op when fsdp = 1). The batch itself is the loop's (over ``('data', 'fsdp')``)."""
    fsdp = int(mesh.shape.get("fsdp", 1))

    def one(leaf: Any) -> NamedSharding:
        shape = tuple(getattr(leaf, "shape", ()))
        spec = [None] * len(shape)
        if fsdp > 1 and int(np.prod(shape, dtype=np.int64)) >= min_size:
            axes = [i for i in np.argsort(shape)[::-1] if shape[i] % fsdp == 0]
            if axes:
                spec[int(axes[0])] = "fsdp"
        return NamedSharding(mesh, PartitionSpec(*spec))

    return lambda shapes: jax.tree.map(one, shapes)


# ----------------------------------------------------------------------------- evaluation
def resolve_image_dir(spec: str) -> Path:
    """A folder path, or ``sample:train`` / ``sample:val``: the bundled sample photos
    (``adcsr_jax.data.sample_set``) split into training and held-out images, written once under
    ``~/.cache/adcsr_jax/sample_images/{train,val}``."""
    if not spec.startswith(SAMPLE_PREFIX):
        return Path(spec).expanduser()
    split = spec[len(SAMPLE_PREFIX) :]
    if split not in ("train", "val"):
        raise ValueError(f"{spec!r}: expected 'sample:train' or 'sample:val'")
    from adcsr_jax.data.sample_set import write_sample_images  # noqa: PLC0415
    from adcsr_jax.weights.metrics import default_cache_dir  # noqa: PLC0415

    folder = default_cache_dir() / "sample_images" / split
    if not folder.is_dir() or not any(folder.iterdir()):
        write_sample_images(folder, split)
    return folder


def load_eval_images(folder: Path, count: int, crop: int) -> np.ndarray:
    """The first ``count`` images, centre-cropped (reflect-padded if smaller) to ``crop``."""
    from adcsr_jax.image_io import list_images, read_image  # noqa: PLC0415

    paths = list_images(folder)[:count]
    if not paths:
        raise FileNotFoundError(f"validation folder {folder} holds no images")
    out = []
    for p in paths:
        img = read_image(p)
        h, w = img.shape[:2]
        if h < crop or w < crop:
            img = np.pad(img, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), "reflect")
            h, w = img.shape[:2]
        top, left = (h - crop) // 2, (w - crop) // 2
        out.append(img[top : top + crop, left : left + crop])
    return np.stack(out).astype(np.float32)


def make_evaluate(config: Any, nets: Networks):
    """Validation: PSNR (Y) and LPIPS of the half decoder and of SD's full decoder on the same
    latents of held-out images, and a grid (x | SD decoder | half decoder) per image row."""
    ev = config.eval
    cache: dict[str, Any] = {}

    @jax.jit
    def latents(frozen, x):
        return sd_latents(nets, frozen, x * 2.0 - 1.0)

    @jax.jit
    def half(params, z):
        return jnp.clip((decode(nets, params, z) + 1.0) * 0.5, 0.0, 1.0)

    @jax.jit
    def sd_decode(params, z):
        out = Decoder(nets.sd).apply({"params": params}, z).astype(jnp.float32)
        return jnp.clip((out + 1.0) * 0.5, 0.0, 1.0)

    def lpips_fn(frozen):
        if ev.lpips_net == "vgg":
            return lambda a, b: lpips_lib.lpips_distance(frozen["lpips"], a, b, "vgg")
        if "alex" not in cache:
            cache["alex"] = lpips_lib.load_lpips_params("alex", config.loss.lpips_weights or None)
        return lambda a, b: lpips_lib.lpips_distance(cache["alex"], a, b, "alex")

    def evaluate(state: State, step: int, workdir: Path) -> tuple[dict[str, float], dict[str, Any]]:
        del step, workdir
        frozen = state["frozen"]
        if "images" not in cache:
            imgs = load_eval_images(resolve_image_dir(ev.dir), int(ev.num_images), int(ev.crop))
            cache["images"] = imgs
            pairs = [latents(frozen, imgs[i : i + 1]) for i in range(len(imgs))]
            zs = [p[0] if nets.taesd is not None else p[1] for p in pairs]  # the decoder's input
            cache["z"] = zs
            sd = load_sd_vae(config, nets)["decoder"]
            cache["sd_out"] = np.concatenate([np.asarray(sd_decode(sd, p[1])) for p in pairs])
        imgs, zs, sd_out = cache["images"], cache["z"], cache["sd_out"]
        half_out = np.concatenate([np.asarray(half(state["train"]["decoder"], z)) for z in zs])
        lp = jax.jit(lpips_fn(frozen))
        scalars = {}
        for name, out in (("half", half_out), ("sd", sd_out)):
            psnr = [float(psnr_y(out[i : i + 1], imgs[i : i + 1])[0]) for i in range(len(imgs))]
            lps = [float(lp(out[i : i + 1], imgs[i : i + 1])[0]) for i in range(len(imgs))]
            scalars[f"val/psnr_{name}"] = float(np.mean(psnr))
            scalars[f"val/lpips_{name}"] = float(np.mean(lps))
        n = min(int(ev.grid_images), len(imgs))
        rows = [np.concatenate([imgs[i], sd_out[i], half_out[i]], axis=1) for i in range(n)]
        grid = to_uint8(np.concatenate(rows, axis=0))[None]
        return scalars, {"val/x_sd_half": grid}

    return evaluate


# ----------------------------------------------------------------------------- export
def make_export(nets: Networks):
    def export(state: State, workdir: Path) -> list[Path]:
        """``<workdir>/half_decoder/`` (our converted folder) and ``<workdir>/halfDecoder.ckpt``;
        TAESD: ``<workdir>/taesd_decoder.safetensors``."""
        params = jax.tree.map(np.asarray, jax.device_get(state["train"]["decoder"]))
        workdir = Path(workdir)
        if nets.taesd is not None:
            from adcsr_jax.weights.taesd import EXPORT_NAME, write_taesd_decoder  # noqa: PLC0415

            return [write_taesd_decoder(workdir / EXPORT_NAME, params)]
        folder = hd.save_half_decoder(workdir / "half_decoder", nets.half, params)
        ckpt = hd.write_half_decoder_ckpt(workdir / hd.CKPT_NAME, params)
        return [folder, ckpt]

    return export


# ----------------------------------------------------------------------------- build
def build(config: Any, mesh: Mesh) -> Stage:
    """The stage-1 :class:`Stage` for an ``ml_collections`` config (``configs/stage1.py``)."""
    nets = networks(config)
    has_eval = bool(config.eval.dir) and int(config.eval.get("every_steps", 0)) > 0
    return Stage(
        name=NAME,
        init=make_init(config, nets),
        shapes=lambda: state_shapes(config, nets),
        shardings=make_shardings(
            mesh, int(config.get("sharding", {}).get("fsdp_min_size", FSDP_MIN_SIZE))
        ),
        step=make_step(config, nets),
        batch_keys=("gt",),
        evaluate=make_evaluate(config, nets) if has_eval else None,
        export=make_export(nets),
        hparams={
            "lr": learning_rate(config),
            "disc_start": int(config.loss.disc_start),
            "disc_weight": float(config.loss.disc_weight),
            "perceptual_weight": float(config.loss.perceptual_weight),
            "decoder_init": str(config.model.decoder_init),
            "half_widths": str(nets.half.block_out_channels),
            "decoder": "pruned" if nets.taesd is None else "taesd",
        },
    )
