"""PyTorch reference networks (diffusers, random weights) for parity tests and benchmarks.

Imports torch/diffusers inside functions. Weights are randomised beyond diffusers' init (norm
affines and biases too), so a wrong name or layout mapping cannot hide behind ones and zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adcsr_jax.nn.norm import group_count

SD21_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    "use_linear_projection": True,
}

# Two levels (cross-attention down, plain down; plain up, cross-attention up), one layer each:
# the smallest UNet with every block kind, for the UNet, LoRA, discriminator and loading tests.
TINY_UNET_CONFIG: dict[str, Any] = {
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 24,
    "attention_head_dim": [2, 4],
    "use_linear_projection": True,
    "norm_num_groups": 8,
}

SD21_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 768,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def _model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def randomize(model: Any, seed: int = 0, spread: float = 0.1) -> Any:
    """Perturb every parameter: weights get +-``spread`` relative noise, 1-D params noise too."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if p.ndim == 1:
                p.add_(spread * noise)
            else:
                p.add_(spread * p.std().clamp_min(1e-3) * noise)
    return model.eval()


def torch_unet(config: dict[str, Any], seed: int = 0) -> Any:
    """A diffusers ``UNet2DConditionModel`` with random weights."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return randomize(UNet2DConditionModel(**_model_kwargs(config)), seed)


def torch_vae(config: dict[str, Any], seed: int = 0) -> Any:
    """A diffusers ``AutoencoderKL`` with random weights."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return randomize(AutoencoderKL(**_model_kwargs(config)), seed)


def strip_unet_conditioning(model: Any, *, cross: bool, time: bool, group_rule: bool) -> Any:
    """Make a diffusers UNet compute what the pruned-style UNet computes, in place.

    ``cross=False`` deletes every ``attn2``/``norm2``; ``time=False`` zeroes every
    ``time_emb_proj`` (so the time embedding adds exactly 0); ``group_rule=True`` rebuilds each
    GroupNorm with ``group_count(width)`` groups (same affine params).
    """
    import torch
    from diffusers.models.attention import BasicTransformerBlock

    for module in list(model.modules()):
        if not cross and isinstance(module, BasicTransformerBlock):
            module.attn2 = None
            module.norm2 = None
        if not time and getattr(module, "time_emb_proj", None) is not None:
            with torch.no_grad():
                module.time_emb_proj.weight.zero_()
                module.time_emb_proj.bias.zero_()
        if group_rule:
            for name, child in list(module.named_children()):
                if isinstance(child, torch.nn.GroupNorm):
                    new = torch.nn.GroupNorm(
                        group_count(child.num_channels), child.num_channels, child.eps
                    )
                    new.load_state_dict(child.state_dict())
                    setattr(module, name, new)
    return model


def state_dict_numpy(model: Any, drop: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The model's state dict as numpy copies, without keys containing any of ``drop``.

    Copies: ``Tensor.numpy()`` shares the tensor's memory, and JAX on CPU may keep using that
    buffer, so a later in-place torch update (an optimizer step) would silently change arrays
    already handed to Flax."""
    return {
        k: v.detach().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if not any(d in k for d in drop)
    }


def nchw(x: Any) -> Any:
    """NHWC numpy -> NCHW torch float tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t: Any) -> np.ndarray:
    """NCHW torch tensor -> NHWC numpy."""
    return t.detach().cpu().numpy().transpose(0, 2, 3, 1)
