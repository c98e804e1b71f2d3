"""PyTorch reference of one AdcSR stage-2 step, written after the official ``train.py`` / ``utils.py``.

Built from diffusers modules and ``peft`` with the student of :mod:`adcsr_jax.testing.torch_adcsr`;
used by the stage-2 parity test and ``scripts/bench_train.py``. fp32, no autocast / GradScaler
(``train.py`` runs under CUDA AMP; the scaler's loss scaling cancels in Adam up to rounding).
Imports torch, diffusers and peft inside functions.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

# AdcSR utils.add_lora_to_unet: substrings of parameter names that get an adapter.
ADCSR_LORA_GREP = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut",
                   "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")  # fmt: skip
ADAPTERS = ("default_encoder", "default_decoder", "default_others")


def add_lora_to_unet(unet: Any, rank: int = 4) -> Any:
    """AdcSR ``utils.add_lora_to_unet``: three gaussian-init PEFT adapters (encoder, decoder,
    others), all active."""
    from peft import LoraConfig

    from adcsr_jax.testing.torch_adcsr import unet_lora_target_names

    enc, dec, others = unet_lora_target_names(unet, ADCSR_LORA_GREP)
    for name, targets in zip(ADAPTERS, (enc, dec, others)):
        unet.add_adapter(
            LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets),
            adapter_name=name,
        )
    unet.set_adapters(list(ADAPTERS))
    return unet


def build_torch_discriminator(
    sd_unet: Any, feature_channels: int = 256, rank: int = 4, copy_unet: bool = True
) -> Any:
    """``train.py``'s ``unet_D``: a copy of SD's UNet, conv_in ``feature_channels -> width`` with
    SD's weight tiled over inputs / factor (bias copied), then the LoRA adapters.
    ``copy_unet=False`` converts ``sd_unet`` in place (benchmarks: one 3.4 GB UNet less)."""
    import torch

    disc = copy.deepcopy(sd_unet) if copy_unet else sd_unet
    old = disc.conv_in
    factor = feature_channels // old.in_channels
    new = torch.nn.Conv2d(feature_channels, old.out_channels, 3, padding=1)
    new.weight.data = old.weight.data.repeat(1, factor, 1, 1) / factor
    new.bias.data = old.bias.data.clone()
    disc.conv_in = new
    disc = add_lora_to_unet(disc, rank)
    disc.requires_grad_(False)
    for n, p in disc.named_parameters():
        if "lora" in n or "conv_in" in n:
            p.requires_grad = True
    return disc


def disc_trainable(disc: Any) -> dict[str, Any]:
    """``train.py``'s ``params_to_opt``: every parameter named ``lora`` or ``conv_in``."""
    return {n: p for n, p in disc.named_parameters() if "lora" in n or "conv_in" in n}


@dataclasses.dataclass
class TorchStage2:
    """The modules of ``train.py`` and its two Adam optimizers."""

    net: Any  # AdcSR Net (pruned UNet + trainable mid block)
    disc: Any
    teacher_vae: Any
    teacher_unet: Any
    sd_vae: Any
    half_decoder: Any  # frozen: conv_in + mid_block give f_T and f_R
    opt_g: Any = None
    opt_d: Any = None
    lr_g: float = 1e-4
    lr_d: float = 1e-6
    lambda_adv: float = 1.0

    def __post_init__(self) -> None:
        import torch

        for m in (self.teacher_vae, self.teacher_unet, self.sd_vae, self.half_decoder):
            m.requires_grad_(False)
        self.net.requires_grad_(True)
        if self.opt_g is None:
            self.opt_g = torch.optim.Adam(self.net.parameters(), lr=self.lr_g)
        if self.opt_d is None:
            self.opt_d = torch.optim.Adam(list(disc_trainable(self.disc).values()), lr=self.lr_d)

    def _d(self, z: Any, text: Any) -> Any:
        import torch

        t = torch.tensor([999], dtype=torch.long).expand(z.shape[0])
        return self.disc(z, t, encoder_hidden_states=text, return_dict=False)[0]

    def step(self, lq: Any, gt: Any, text: Any) -> dict[str, float]:
        """One ``train.py`` iteration on NCHW ``lq`` / ``gt`` in [0, 1]; returns the loss terms."""
        import torch
        import torch.nn.functional as F

        from adcsr_jax.testing.torch_adcsr import sd_alphas_cumprod

        alpha = sd_alphas_cumprod()[999]
        with torch.no_grad():
            lr, hr = lq * 2 - 1, gt * 2 - 1
            sf = self.teacher_vae.config.scaling_factor
            up = F.interpolate(lr, scale_factor=4, mode="bicubic")
            z = self.teacher_vae.encode(up).latent_dist.mean * sf
            t = torch.tensor([999], dtype=torch.long).expand(lr.shape[0])
            eps = self.teacher_unet(z, t, encoder_hidden_states=text, return_dict=False)[0]
            z0 = (z - ((1 - alpha) ** 0.5) * eps) / (alpha**0.5)
            dec = self.half_decoder
            f_t = dec.mid_block(dec.conv_in(self.teacher_vae.post_quant_conv(z0 / sf)))
            hr_latents = self.sd_vae.encode(hr).latent_dist.mean
            f_r = dec.mid_block(dec.conv_in(self.sd_vae.post_quant_conv(hr_latents)))
        f_s = self.net(lr)
        distill = (f_s - f_t).abs().mean()
        fake_g = self._d(f_s, text)
        adv = F.softplus(-fake_g).mean()
        loss = distill + self.lambda_adv * adv
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        pred_real = self._d(f_r.detach(), text)
        pred_fake = self._d(f_s.detach(), text)
        d_fake = F.softplus(pred_fake).mean()
        d_real = F.softplus(-pred_real).mean()
        loss_d = d_fake + d_real
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return {
            "loss/distill": float(distill), "loss/adv_g": float(adv), "loss/g": float(loss),
            "loss/d": float(loss_d), "loss/d_real": float(d_real), "loss/d_fake": float(d_fake),
            "d/logit_real": float(pred_real.mean()), "d/logit_fake": float(pred_fake.mean()),
        }  # fmt: skip


def adam_moments(opt: Any, named: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{'exp_avg': {name: numpy}, 'exp_avg_sq': {...}}`` of ``opt`` for ``named`` parameters."""
    out: dict[str, dict[str, Any]] = {"exp_avg": {}, "exp_avg_sq": {}}
    for name, p in named.items():
        state = opt.state.get(p, {})
        for key in out:
            if key in state:
                out[key][name] = state[key].detach().cpu().numpy()
    return out
