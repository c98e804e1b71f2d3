"""PyTorch references for the AdcSR student and the OSEDiff teacher, built from diffusers modules.

Used by the parity tests and ``scripts/bench_infer.py``; imports torch/diffusers inside functions.
The student follows AdcSR's recipe (``model.py: Net``, ``forward.py``): an SD UNet with a tiled
conv_in/conv_out, no time embedding and no cross-attention, every Conv2d / Linear / GroupNorm /
LayerNorm sliced to its leading ``ratio`` of channels (done here on the torch modules, as
AdcSR does), the simplified block forwards with a global skip stack, PixelUnshuffle(2) in front
and a half-width diffusers ``Decoder``'s mid block behind. ``TorchNet.state_dict()`` therefore has
the released ``net_params`` layout, duplicates under ``body.1.body.K`` included.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from adcsr_jax.weights.prune import adcsr_groups, pruned

HALF_DECODER_CONFIG: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 3,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [64, 128, 256, 256],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "norm_type": "group",
    "mid_block_add_attention": True,
}
TINY_SD_UNET_CONFIG: dict[str, Any] = {
    "block_out_channels": [32, 64, 128, 128],
    "attention_head_dim": [2, 2, 4, 4],
    "layers_per_block": 2,
    "cross_attention_dim": 32,
    "norm_num_groups": 32,
    "use_linear_projection": True,
    "sample_size": 16,
}
TINY_HALF_DECODER_CONFIG: dict[str, Any] = {
    **HALF_DECODER_CONFIG,
    "block_out_channels": [32, 32, 64, 64],
}


def torch_half_decoder(config: dict[str, Any] | None = None, seed: int = 0) -> Any:
    """A diffusers ``Decoder`` (AdcSR's half decoder by default) with random weights."""
    import torch
    from diffusers.models.autoencoders.vae import Decoder

    from adcsr_jax.testing.reference import randomize

    torch.manual_seed(seed)
    return randomize(Decoder(**(config or HALF_DECODER_CONFIG)), seed)


def _slice_module(module: Any, ratio: float) -> Any:
    """A sliced copy of one Conv2d / Linear / GroupNorm / LayerNorm (AdcSR's ``halve_channels``).

    From a module on the ``meta`` device the copy keeps torch's fresh random init (benchmarks).
    """
    import torch
    from torch import nn

    weight = getattr(module, "weight", None)
    if weight is not None and weight.is_meta:
        copy_ = lambda dst, src: None  # noqa: E731
    else:
        copy_ = lambda dst, src: dst.copy_(src)  # noqa: E731
    with torch.no_grad():
        if isinstance(module, nn.Conv2d):
            i, o = pruned(module.in_channels, ratio), pruned(module.out_channels, ratio)
            new = nn.Conv2d(i, o, module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, module.bias is not None)  # fmt: skip
            copy_(new.weight, module.weight[:o, :i])
        elif isinstance(module, nn.Linear):
            i, o = pruned(module.in_features, ratio), pruned(module.out_features, ratio)
            new = nn.Linear(i, o, bias=module.bias is not None)
            copy_(new.weight, module.weight[:o, :i])
        elif isinstance(module, nn.GroupNorm):
            o = pruned(module.num_channels, ratio)
            new = nn.GroupNorm(adcsr_groups(o), o, eps=module.eps, affine=module.affine)
            copy_(new.weight, module.weight[:o])
        elif isinstance(module, nn.LayerNorm):
            o = pruned(module.normalized_shape[0], ratio)
            new = nn.LayerNorm(o, eps=module.eps, elementwise_affine=module.elementwise_affine)
            copy_(new.weight, module.weight[:o])
        else:
            return module
        if getattr(module, "bias", None) is not None:
            copy_(new.bias, module.bias[:o])
    return new


def prune_torch_unet(unet: Any, ratio: float = 0.75, features: int = 256) -> Any:
    """AdcSR's surgery on a deep copy of a diffusers SD UNet (torch modules sliced in place)."""
    import torch
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D
    from torch import nn

    unet = copy.deepcopy(unet)
    del unet.time_embedding
    width = unet.conv_in.out_channels
    n_in = math.ceil(12 / ratio)
    n_out = math.ceil(features / ratio)
    meta = unet.conv_in.weight.is_meta
    with torch.no_grad():
        conv_in = nn.Conv2d(n_in, width, 3, padding=1)
    if not meta:
        with torch.no_grad():
            reps = math.ceil(n_in / unet.conv_in.in_channels)
            conv_in.weight.copy_(unet.conv_in.weight.repeat(1, reps, 1, 1)[:, :n_in])
            conv_in.bias.copy_(unet.conv_in.bias)
    conv_out = nn.Conv2d(unet.conv_out.in_channels, n_out, 3, padding=1)
    if not meta:
        with torch.no_grad():
            reps = math.ceil(n_out / unet.conv_out.out_channels)
            conv_out.weight.copy_(unet.conv_out.weight.repeat(reps, 1, 1, 1)[:n_out])
            conv_out.bias.copy_(unet.conv_out.bias.repeat(reps)[:n_out])
    unet.conv_in, unet.conv_out = conv_in, conv_out
    for module in list(unet.modules()):
        if isinstance(module, ResnetBlock2D):
            del module.time_emb_proj
        if isinstance(module, BasicTransformerBlock):
            del module.attn2, module.norm2
    for name, module in list(unet.named_modules()):
        if isinstance(module, Downsample2D | Upsample2D):
            module.channels = pruned(module.channels, ratio)
        new = _slice_module(module, ratio)
        if new is not module:
            parent = unet.get_submodule(name.rsplit(".", 1)[0]) if "." in name else unet
            setattr(parent, name.rsplit(".", 1)[-1], new)
    return unet


# -- AdcSR's simplified forwards (forward.py), written as functions over diffusers modules.


def _resnet(m: Any, x: Any) -> Any:
    import torch.nn.functional as F

    h = m.conv1(F.silu(m.norm1(x)))
    h = m.conv2(F.silu(m.norm2(h)))
    return h + (m.conv_shortcut(x) if m.conv_shortcut is not None else x)


def _transformer(m: Any, x_in: Any) -> Any:
    b, c, h, w = x_in.shape
    x = m.norm(x_in).permute(0, 2, 3, 1).reshape(b, h * w, c)
    x = m.proj_in(x)
    for block in m.transformer_blocks:
        x = x + block.attn1(block.norm1(x))
        x = x + block.ff(block.norm3(x))
    x = m.proj_out(x)
    return x.reshape(b, h, w, -1).permute(0, 3, 1, 2) + x_in


def pruned_unet_forward(unet: Any, x: Any) -> Any:
    """AdcSR's UNet forward: conv_in, down blocks pushing skips, mid, up blocks popping 3 each."""
    import torch
    import torch.nn.functional as F

    x = unet.conv_in(x)
    skips = [x]
    for block in unet.down_blocks:
        for i, resnet in enumerate(block.resnets):
            x = _resnet(resnet, x)
            if getattr(block, "attentions", None) is not None:
                x = _transformer(block.attentions[i], x)
            skips.append(x)
        if block.downsamplers is not None:
            x = block.downsamplers[0](x)
            skips.append(x)
    mid = unet.mid_block
    if mid is not None:  # BK-SDM's block-removed UNet has none
        x = _resnet(mid.resnets[1], _transformer(mid.attentions[0], _resnet(mid.resnets[0], x)))
    for block in unet.up_blocks:
        for i, resnet in enumerate(block.resnets):
            x = _resnet(resnet, torch.cat([x, skips.pop()], dim=1))
            if getattr(block, "attentions", None) is not None:
                x = _transformer(block.attentions[i], x)
        if block.upsamplers is not None:
            x = block.upsamplers[0](x)
    return unet.conv_out(F.silu(unet.conv_norm_out(x)))


def build_torch_student(sd_unet: Any, half_decoder: Any, ratio: float = 0.75) -> tuple[Any, Any]:
    """``(net, tail)``: AdcSR's ``Net`` (state dict = ``net_params`` layout) and the frozen tail."""
    from torch import nn

    features = half_decoder.mid_block.resnets[0].conv1.out_channels
    unet = prune_torch_unet(sd_unet, ratio, features)
    mid = [] if unet.mid_block is None else [unet.mid_block]
    unet.body = nn.Sequential(*unet.down_blocks, *mid, *unet.up_blocks,
                              unet.conv_norm_out, nn.SiLU(), unet.conv_out)  # fmt: skip
    unet.forward = lambda x: pruned_unet_forward(unet, x)

    class TorchNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.PixelUnshuffle(2), unet, copy.deepcopy(half_decoder.mid_block)
            )

        def forward(self, x: Any) -> Any:
            return self.body(x)

    dec = half_decoder
    tail = nn.Sequential(*dec.up_blocks, dec.conv_norm_out, dec.conv_act, dec.conv_out)
    return TorchNet().eval(), tail.eval()


def torch_student_infer(net: Any, tail: Any, lr: Any, colour_fix: bool = True) -> Any:
    """AdcSR ``test.py``: LR in [-1, 1] (NCHW) -> SR in [0, 1], colour-fixed and clamped."""
    sr = tail(net(lr))
    if colour_fix:
        sr = (sr - sr.mean(dim=[2, 3], keepdim=True)) / sr.std(dim=[2, 3], keepdim=True)
        sr = sr * lr.std(dim=[2, 3], keepdim=True) + lr.mean(dim=[2, 3], keepdim=True)
    return (sr / 2 + 0.5).clamp(0, 1)


def sd_alphas_cumprod() -> Any:
    """diffusers' scaled_linear schedule of SD (torch float32), as AdcSR reads ``alphas_cumprod``."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          num_train_timesteps=1000)  # fmt: skip
    return sched.alphas_cumprod


def torch_teacher(
    vae: Any, unet: Any, lr: Any, text: Any, noise: Any = None, half_decoder: Any = None
) -> dict[str, Any]:
    """OSEDiff one step as AdcSR's ``train.py`` runs it, on NCHW LR in [-1, 1]; every stage.

    Returns ``{'z', 'z0', 'image', 'features'}``: scaled latent, closed-form z0, image clamped to
    [-1, 1], ``f_T`` (None without ``half_decoder``). With ``noise`` the latent is
    ``mean + std * noise`` (``latent_dist.sample()``), else the mean.
    """
    import torch.nn.functional as F

    x = F.interpolate(lr, scale_factor=4, mode="bicubic")
    dist = vae.encode(x).latent_dist
    z = dist.mean if noise is None else dist.mean + dist.std * noise
    sf = vae.config.scaling_factor
    z = z * sf
    alpha = sd_alphas_cumprod()[999]
    eps = unet(z, 999, encoder_hidden_states=text).sample
    z0 = (z - (1 - alpha) ** 0.5 * eps) / alpha**0.5
    out = {"z": z, "z0": z0, "image": vae.decode(z0 / sf).sample.clamp(-1, 1), "features": None}
    if half_decoder is not None:
        out["features"] = half_decoder.mid_block(half_decoder.conv_in(vae.post_quant_conv(z0 / sf)))
    return out


TINY_SD_VAE_CONFIG: dict[str, Any] = {
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
}

_UNET_LORA_GREP = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in",
                   "conv_shortcut", "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")  # fmt: skip
_VAE_LORA_GREP = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out",
                  "to_k", "to_q", "to_v", "to_out.0")  # fmt: skip


def unet_lora_target_names(
    unet: Any, patterns: tuple[str, ...] = _UNET_LORA_GREP
) -> tuple[list[str], list[str], list[str]]:
    """(encoder, decoder, others) module names by OSEDiff's ``initialize_unet`` rule, which
    AdcSR's ``utils.add_lora_to_unet`` repeats: no bias/norm, first matching pattern wins."""
    enc, dec, others = [], [], []
    for n, _ in unet.named_parameters():
        if "bias" in n or "norm" in n:
            continue
        for pattern in patterns:
            if pattern in n and ("down_blocks" in n or "conv_in" in n):
                enc.append(n.replace(".weight", ""))
                break
            if pattern in n and ("up_blocks" in n or "conv_out" in n):
                dec.append(n.replace(".weight", ""))
                break
            if pattern in n:
                others.append(n.replace(".weight", ""))
                break
    return enc, dec, others


def osediff_lora_targets(unet: Any, vae: Any) -> dict[str, list[str]]:
    """OSEDiff's LoRA target module names (``initialize_unet`` / ``initialize_vae`` rules)."""
    enc, dec, others = unet_lora_target_names(unet)
    vae_enc = []
    for n, _ in vae.named_parameters():
        if "bias" in n or "norm" in n:
            continue
        for pattern in _VAE_LORA_GREP:
            in_encoder = pattern in n and "encoder" in n
            if in_encoder or ("quant_conv" in n and "post_quant_conv" not in n):
                vae_enc.append(n.replace(".weight", ""))
    return {"unet_lora_encoder_modules": enc, "unet_lora_decoder_modules": dec,
            "unet_lora_others_modules": others, "vae_lora_encoder_modules": vae_enc}  # fmt: skip


def random_osediff_pkl(unet: Any, vae: Any, rank: int = 4, seed: int = 0) -> dict[str, Any]:
    """A dict in OSEDiff's ``osediff.pkl`` layout (PEFT names) with random LoRA weights."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    targets = osediff_lora_targets(unet, vae)
    adapters = {"unet_lora_encoder_modules": "default_encoder",
                "unet_lora_decoder_modules": "default_decoder",
                "unet_lora_others_modules": "default_others"}  # fmt: skip

    def pair(module: Any, adapter: str, name: str) -> dict[str, Any]:
        w = module.weight
        if w.ndim == 4:
            a = torch.randn((rank, w.shape[1], *w.shape[2:]), generator=gen) / 4
            b = torch.randn((w.shape[0], rank, 1, 1), generator=gen) * 0.02
        else:
            a = torch.randn((rank, w.shape[1]), generator=gen) / 4
            b = torch.randn((w.shape[0], rank), generator=gen) * 0.02
        return {f"{name}.lora_A.{adapter}.weight": a, f"{name}.lora_B.{adapter}.weight": b}

    sd_unet: dict[str, Any] = {}
    for group, adapter in adapters.items():
        for name in targets[group]:
            sd_unet.update(pair(unet.get_submodule(name), adapter, name))
    sd_unet["conv_in.base_layer.weight"] = unet.conv_in.weight.detach() + 0.01
    sd_unet["conv_in.base_layer.bias"] = unet.conv_in.bias.detach() - 0.01
    sd_vae: dict[str, Any] = {}
    for name in dict.fromkeys(targets["vae_lora_encoder_modules"]):
        sd_vae.update(pair(vae.get_submodule(name), "default_encoder", name))
    return {**targets, "rank_unet": rank, "rank_vae": rank,
            "state_dict_unet": sd_unet, "state_dict_vae": sd_vae}  # fmt: skip


def attach_runtime_lora(
    model: Any, peft_state: dict[str, Any], rank: int, alpha: float = 8.0
) -> list:
    """PEFT's unmerged forward on a deep copy's modules: ``out + alpha/r * B(A(x))`` via hooks.

    ``<m>.base_layer.<p>`` entries overwrite the module's own parameter. Returns the hook handles.
    """
    import torch
    import torch.nn.functional as F

    scale = alpha / rank
    groups: dict[str, dict[str, Any]] = {}
    for key, value in peft_state.items():
        if ".base_layer." in key:
            module_name, param = key.split(".base_layer.")
            with torch.no_grad():
                getattr(model.get_submodule(module_name), param).copy_(value)
            continue
        module_name, rest = key.split(".lora_")
        groups.setdefault(module_name, {})[rest[0]] = value
    handles = []
    for module_name, ab in groups.items():
        module = model.get_submodule(module_name)

        def hook(mod: Any, inputs: Any, out: Any, a: Any = ab["A"], b: Any = ab["B"]) -> Any:
            x = inputs[0]
            if isinstance(mod, torch.nn.Conv2d):
                h = F.conv2d(x, a, stride=mod.stride, padding=mod.padding, dilation=mod.dilation)
                return out + scale * F.conv2d(h, b)
            return out + scale * F.linear(F.linear(x, a), b)

        handles.append(module.register_forward_hook(hook))
    return handles
