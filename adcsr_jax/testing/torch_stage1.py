"""PyTorch reference of stage 1 (half-decoder pretraining) and of AdcSR's half-decoder loading.

* :class:`TorchStage1`: latent-diffusion's ``AutoencoderKL.training_step`` with
  ``LPIPSWithDiscriminator`` (``ldm/modules/losses/contperceptual.py``: ``forward``,
  ``calculate_adaptive_weight``) and taming's ``hinge_d_loss`` / ``adopt_weight``
  (``taming/modules/losses/vqperceptual.py``) written out below, on diffusers' ``AutoencoderKL``
  (frozen encoder, quant_conv, post_quant_conv), the half ``Decoder`` built as AdcSR's
  ``train.py`` builds it and taming's ``NLayerDiscriminator``; the G update, then D's on the same
  batch with the updated decoder (Lightning's order). fp32.
* :func:`adcsr_torch_decoder` / :func:`load_like_train_py`: the half decoder and the strict load
  of ``halfDecoder.ckpt`` exactly as AdcSR's ``train.py`` does them.

Used by ``tests/train/test_stage1.py``, ``tests/weights/test_half_decoder.py`` and
``scripts/bench_train_stage1.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from adcsr_jax.testing.torch_metrics import _torch_vgg


def t(a: Any) -> torch.Tensor:
    """fp32 torch tensor of an array-like (a copy)."""
    return torch.from_numpy(np.array(a, np.float32))


# ----------------------------------------------------------------------------- half decoder
def adcsr_torch_decoder(widths) -> torch.nn.Module:
    """The half decoder exactly as AdcSR's ``train.py`` builds it (widths aside)."""
    from diffusers.models.autoencoders.vae import Decoder  # noqa: PLC0415

    return Decoder(
        in_channels=4, out_channels=3, up_block_types=["UpDecoderBlock2D" for _ in range(4)],
        block_out_channels=list(widths), layers_per_block=2, norm_num_groups=32, act_fn="silu",
        norm_type="group", mid_block_add_attention=True,
    )  # fmt: skip


def load_like_train_py(path: str | Path) -> torch.nn.Module:
    """AdcSR ``train.py`` lines 76-91, verbatim logic: strict load of the 'decoder' entries."""
    ckpt_halfdecoder = torch.load(path, weights_only=False)
    decoder_ckpt = {}
    for k, v in ckpt_halfdecoder["state_dict"].items():
        if "decoder" in k:
            decoder_ckpt[k.replace("decoder.", "")] = v
    widths = [decoder_ckpt[f"up_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(4)]
    decoder = adcsr_torch_decoder(tuple(reversed(widths)))
    decoder.load_state_dict(decoder_ckpt, strict=True)
    return decoder


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial norm affines and biases (torch inits them to 1 / 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim == 1:
                p.copy_(p + 0.05 * torch.randn(p.shape, generator=g))


def torch_out(module: torch.nn.Module, z: np.ndarray) -> np.ndarray:
    """A torch decoder on NHWC latents, NHWC output."""
    with torch.no_grad():
        out = module(torch.from_numpy(z).permute(0, 3, 1, 2))
    return out.permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------- loss pieces
def torch_lpips(params, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """taming ``LPIPS`` (VGG, v0.1) on NCHW tensors in [-1, 1], shape (B, 1, 1, 1)."""
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    f0, f1 = _torch_vgg(params, (x0 - shift) / scale), _torch_vgg(params, (x1 - shift) / scale)
    total = 0
    for i, (a, b) in enumerate(zip(f0, f1)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        lin = t(params[f"lin{i}"]).view(1, -1, 1, 1)
        total = total + torch.nn.functional.conv2d((a - b) ** 2, lin).mean([2, 3], keepdim=True)
    return total


def adopt_weight(weight, global_step, threshold=0, value=0.0):
    """taming ``adopt_weight``."""
    if global_step < threshold:
        weight = value
    return weight


def hinge_d_loss(logits_real, logits_fake):
    """taming ``hinge_d_loss``."""
    loss_real = torch.mean(torch.nn.functional.relu(1.0 - logits_real))
    loss_fake = torch.mean(torch.nn.functional.relu(1.0 + logits_fake))
    return 0.5 * (loss_real + loss_fake)


# ----------------------------------------------------------------------------- the step
def sd_autoencoder(sd_widths, layers_per_block: int = 2, norm_num_groups: int = 32):
    """diffusers' ``AutoencoderKL`` of SD's VAE shape (eval mode; weights drawn by torch)."""
    import diffusers  # noqa: PLC0415

    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=list(sd_widths), layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups,
    ).eval()  # fmt: skip


class TorchStage1:
    """latent-diffusion's AutoencoderKL + LPIPSWithDiscriminator with a frozen encoder.

    ``vae``: diffusers ``AutoencoderKL`` (only encoder, quant_conv, post_quant_conv are used);
    ``decoder``: the half decoder; ``disc``: taming's ``NLayerDiscriminator`` (train mode);
    ``lpips``: LPIPS-VGG params as numpy (``adcsr_jax.eval.lpips`` names); ``loss``: the
    config's ``loss`` fields; ``train_logvar``: give logvar to the G optimizer.
    """

    def __init__(self, vae, decoder, disc, lpips, loss, lr: float, train_logvar: bool = False):
        self.vae, self.decoder, self.disc = vae, decoder, disc
        self.disc.train()
        self.logvar = torch.nn.Parameter(torch.tensor(float(loss.logvar_init)))
        self.lpips = {k: np.asarray(v) for k, v in lpips.items()}
        params = list(self.decoder.parameters()) + ([self.logvar] if train_logvar else [])
        self.opt_g = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.9))
        self.loss = loss

    @classmethod
    def from_state(cls, config, state, nets) -> TorchStage1:
        """The reference with the weights of a Flax stage-1 ``state`` (``stage1.networks``)."""
        from taming.modules.discriminator.model import NLayerDiscriminator  # noqa: PLC0415

        from adcsr_jax.train import stage1  # noqa: PLC0415
        from adcsr_jax.weights.mapping import params_to_torch  # noqa: PLC0415

        sd, half = nets.sd, nets.half
        tr, fr = state["train"], state["frozen"]
        vae = sd_autoencoder(sd.block_out_channels, sd.layers_per_block, sd.norm_num_groups)
        frozen = {"encoder": fr["sd_encoder"], "quant_conv": fr["sd_quant"],
                  "post_quant_conv": fr["post_quant_conv"]}  # fmt: skip
        missing, unexpected = vae.load_state_dict(
            {k: t(v) for k, v in params_to_torch(frozen).items()}, strict=False
        )
        if unexpected or not all(k.startswith("decoder.") for k in missing):
            raise ValueError(f"frozen VAE: unexpected {unexpected}, missing {missing}")
        decoder = adcsr_torch_decoder(half.block_out_channels)
        decoder.load_state_dict(
            {k: t(v) for k, v in params_to_torch(tr["decoder"]).items()}, strict=True
        )
        loss = config.loss
        disc = NLayerDiscriminator(3, loss.disc_ndf, loss.disc_num_layers)
        disc_sd = {k: t(v) for k, v in params_to_torch(tr["disc"]).items()}
        for name, st in tr["disc_batch_stats"].items():
            key = name.replace("main_", "main.")
            disc_sd[f"{key}.running_mean"] = t(st["mean"])
            disc_sd[f"{key}.running_var"] = t(st["var"])
        missing, unexpected = disc.load_state_dict(disc_sd, strict=False)
        if unexpected or not all(k.endswith("num_batches_tracked") for k in missing):
            raise ValueError(f"discriminator: unexpected {unexpected}, missing {missing}")
        return cls(vae, decoder, disc, fr["lpips"], loss, stage1.learning_rate(config),
                   train_logvar=bool(loss.train_logvar))  # fmt: skip

    def latents(self, gt: np.ndarray) -> torch.Tensor:
        x = t(gt).permute(0, 3, 1, 2) * 2 - 1
        with torch.no_grad():
            return self.vae.post_quant_conv(self.vae.encode(x).latent_dist.mean)

    def g_step(self, gt: np.ndarray, global_step: int, z: torch.Tensor) -> dict[str, float]:
        """ldm ``optimizer_idx=0`` on one batch; ``z`` = the frozen encoder's latents."""
        c = self.loss
        x = t(gt).permute(0, 3, 1, 2) * 2 - 1
        self.disc.requires_grad_(False)  # Lightning's toggle_optimizer
        x_hat = self.decoder(z)
        rec_loss = torch.abs(x - x_hat)
        p_loss = torch_lpips(self.lpips, x, x_hat)
        rec_loss = rec_loss + c.perceptual_weight * p_loss
        nll_loss = rec_loss / torch.exp(self.logvar) + self.logvar
        nll_loss = torch.sum(nll_loss) / nll_loss.shape[0]
        logits_fake = self.disc(x_hat)
        g_loss = -torch.mean(logits_fake)
        last = self.decoder.conv_out.weight
        nll_grads = torch.autograd.grad(nll_loss, last, retain_graph=True)[0]
        g_grads = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
        d_weight = torch.clamp(d_weight, 0.0, 1e4).detach() * c.disc_weight
        disc_factor = adopt_weight(c.disc_factor, global_step, threshold=c.disc_start)
        loss = nll_loss + d_weight * disc_factor * g_loss
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()
        self.disc.requires_grad_(True)
        return {
            "loss/nll": nll_loss.item(), "loss/rec": rec_loss.mean().item(),
            "loss/lpips": p_loss.mean().item(), "loss/g": g_loss.item(),
            "adaptive_weight": d_weight.item(), "loss/total": loss.item(),
            "disc_factor": float(disc_factor),
        }  # fmt: skip

    def d_step(self, gt: np.ndarray, global_step: int, z: torch.Tensor) -> dict[str, float]:
        """ldm ``optimizer_idx=1``: the reconstruction comes from the (updated) decoder."""
        c = self.loss
        x = t(gt).permute(0, 3, 1, 2) * 2 - 1
        with torch.no_grad():
            x_hat = self.decoder(z)
        disc_factor = adopt_weight(c.disc_factor, global_step, threshold=c.disc_start)
        logits_real = self.disc(x.detach())
        logits_fake = self.disc(x_hat.detach())
        d_loss = disc_factor * hinge_d_loss(logits_real, logits_fake)
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        return {
            "loss/d": d_loss.item(), "d/logits_real": logits_real.mean().item(),
            "d/logits_fake": logits_fake.mean().item(),
        }  # fmt: skip
