"""Foreign checkpoints -> Flax params: reading, name/layout mapping, our own safetensors format.

The only package allowed to import torch (inside functions). Entry points: :func:`load_unet`,
:func:`load_vae`, :func:`read_state_dict`, :func:`unet_params_from_torch`,
:func:`vae_params_from_torch`, :func:`decoder_params_from_torch`, :func:`save_converted`,
:func:`load_converted`, :func:`load_text_encoder` (SD 2.1's CLIP text encoder),
:func:`load_tagger` (RAM / DAPE).
"""

from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
from adcsr_jax.weights.io import (
    read_safetensors,
    read_state_dict,
    read_torch,
    strip_module_prefix,
    strip_prefix,
    unwrap_state_dict,
    write_safetensors,
)
from adcsr_jax.weights.loaders import (
    check_params,
    load_converted,
    load_unet,
    load_vae,
    save_converted,
    to_device,
)
from adcsr_jax.weights.mapping import params_from_torch, params_to_torch, torch_key_to_path
from adcsr_jax.weights.networks import (
    decoder_params_from_torch,
    decoder_template,
    unet_params_from_torch,
    unet_template,
    vae_params_from_torch,
    vae_template,
)
from adcsr_jax.weights.tagger import load_tagger
from adcsr_jax.weights.text_encoder import load_text_encoder

__all__ = [
    "CheckpointMismatchError",
    "CheckpointReadError",
    "check_params",
    "decoder_params_from_torch",
    "decoder_template",
    "load_converted",
    "load_tagger",
    "load_text_encoder",
    "load_unet",
    "load_vae",
    "params_from_torch",
    "params_to_torch",
    "read_safetensors",
    "read_state_dict",
    "read_torch",
    "save_converted",
    "strip_module_prefix",
    "strip_prefix",
    "to_device",
    "torch_key_to_path",
    "unet_params_from_torch",
    "unet_template",
    "unwrap_state_dict",
    "vae_params_from_torch",
    "vae_template",
    "write_safetensors",
]
