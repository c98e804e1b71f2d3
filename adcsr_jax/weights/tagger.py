"""RAM's ``ram_swin_large_14m.pth`` + OSEDiff's ``DAPE.pth`` -> :class:`Tagger`.

What ``ram(pretrained=..., pretrained_condition=..., image_size=384, vit='swin_l')`` in
``ram/models/ram_lora.py`` (cswry/OSEDiff, Guaishou74851/AdcSR) does, then ``.eval()``:

1. RAM's file: ``checkpoint['model']``, ``vision_multi`` renamed ``tagging_head``, buffers
   (``relative_position_index``, ``attn_mask``) dropped, loaded with ``strict=False``.
2. DAPE's file on top, ``strict=False``: its entries replace RAM's.
3. ``tie_encoder_decoder_weights``: the tagging head's Linear/LayerNorm weights are the same
   tensors as ``tag_encoder``'s first layers, so whichever name a file gives wins (the
   ``tagging_head`` name when a file has both, as ``load_state_dict`` visits it last).
4. loralib merges on ``eval()``: ``W += B @ A * alpha / r`` (alpha 1, r 8) for the BERT
   ``query``/``key`` ``lora.Linear`` s, and for Swin's ``qkv`` ``MergedLinear`` with
   ``enable_lora=[True, False, True]`` the two halves of ``B``/``A`` go to the q and v rows.

Relative position tables must already be (2*12-1)^2 rows (RAM's 384 checkpoint is; the
reference would interpolate other sizes with scipy, which is not done here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from adcsr_jax.models import abstract_params_of
from adcsr_jax.models.tagger import RAMTagger, Tagger, TaggerConfig, read_tag_files
from adcsr_jax.weights.by_template import params_by_template, torch_key
from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
from adcsr_jax.weights.io import read_safetensors, read_torch, unwrap_state_dict
from adcsr_jax.weights.loaders import to_device

OWNED = ("visual_encoder.", "image_proj.", "label_embed", "wordvec_proj.", "tagging_head.", "fc.")
BUFFERS = ("relative_position_index", "attn_mask")
_TIED = (
    "crossattention.self.query",
    "crossattention.self.key",
    "crossattention.self.value",
    "crossattention.output.dense",
    "crossattention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


def read_ram_state_dict(
    path: str | os.PathLike[str], *, allow_unsafe_pickle: bool = False
) -> dict[str, np.ndarray]:
    """``{name: array}`` of a RAM / DAPE file (``{'model': sd}``, ``{'params': sd}``, or a bare
    state dict; ``.safetensors`` too), ``vision_multi`` renamed ``tagging_head``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        obj: Any = read_safetensors(path)[0]
    else:
        obj = read_torch(path, allow_unsafe_pickle=allow_unsafe_pickle)
    if isinstance(obj, Mapping):
        for key in ("model", "params"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    sd = unwrap_state_dict(obj, str(path))
    return {k.replace("vision_multi", "tagging_head"): v for k, v in sd.items()}


def _tied_names(layers: int) -> list[tuple[str, str]]:
    out = []
    for i in range(layers):
        for mod in _TIED:
            for leaf in ("weight", "bias"):
                out.append(
                    (
                        f"tagging_head.encoder.layer.{i}.{mod}.{leaf}",
                        f"tag_encoder.encoder.layer.{i}.{mod}.{leaf}",
                    )
                )
    return out


def _load_into(state: dict[str, np.ndarray], sd: Mapping[str, np.ndarray], layers: int) -> None:
    """``load_state_dict(sd, strict=False)`` on the tied model (see the module docstring)."""
    state.update(sd)
    for head, enc in _tied_names(layers):
        if head not in sd and enc in sd:
            state[head] = sd[enc]


def merge_lora(
    state: dict[str, np.ndarray], *, alpha: float = 1.0, source: str = "checkpoint"
) -> dict[str, np.ndarray]:
    """Fold every ``X.lora_A`` / ``X.lora_B`` pair under :data:`OWNED` into ``X.weight``."""
    out = {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    for key in sorted(k for k in state if k.endswith(".lora_A") and k.startswith(OWNED)):
        base = key[: -len(".lora_A")]
        if base + ".lora_B" not in state or base + ".weight" not in state:
            raise CheckpointMismatchError(
                source,
                "DAPE LoRA",
                missing=[k for k in (base + ".lora_B", base + ".weight") if k not in state],
            )
        a = np.asarray(state[key], np.float32)
        b = np.asarray(state[base + ".lora_B"], np.float32)
        w = np.array(state[base + ".weight"], np.float32)
        if base.endswith("attn.qkv"):  # MergedLinear, enable_lora=[True, False, True]
            dim = w.shape[1]
            r = a.shape[0] // 2
            if w.shape != (3 * dim, dim) or a.shape != (2 * r, dim) or b.shape != (2 * dim, r):
                raise CheckpointMismatchError(
                    source,
                    "DAPE LoRA (Swin qkv, q and v)",
                    mismatched=[(base + ".lora_B", b.shape, (2 * dim, r))],
                )
            w[:dim] += (b[:dim] @ a[:r]) * (alpha / r)
            w[2 * dim :] += (b[dim:] @ a[r:]) * (alpha / r)
        else:
            r = a.shape[0]
            if b.shape != (w.shape[0], r) or a.shape[1] != w.shape[1]:
                raise CheckpointMismatchError(
                    source, "DAPE LoRA", mismatched=[(base + ".lora_B", b.shape, (w.shape[0], r))]
                )
            w += (b @ a) * (alpha / r)
        out[base + ".weight"] = w
    return out


def config_from_state(state: Mapping[str, np.ndarray]) -> TaggerConfig:
    """Sizes read off a RAM state dict; head count (4) and eps are RAM's config values, and the
    input side comes from stage 0's ``attn_mask`` buffer when present (else 384)."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointMismatchError("RAM checkpoint", "RAM tagger", missing=[key])
        return tuple(np.shape(state[key]))

    ve = "visual_encoder.layers"
    depths, heads = [], []
    while f"{ve}.{len(depths)}.blocks.0.norm1.weight" in state:
        i = len(depths)
        depths.append(
            sum(
                1
                for k in state
                if k.startswith(f"{ve}.{i}.blocks.") and k.endswith(".norm1.weight")
            )
        )
        heads.append(shape(f"{ve}.{i}.blocks.0.attn.relative_position_bias_table")[1])
    if not depths:
        raise CheckpointMismatchError(
            "RAM checkpoint", "RAM tagger", missing=[f"{ve}.0.blocks.0.norm1.weight"]
        )
    embed_dim = shape("visual_encoder.patch_embed.proj.weight")[0]
    patch = shape("visual_encoder.patch_embed.proj.weight")[2]
    window = (
        int(round(shape(f"{ve}.0.blocks.0.attn.relative_position_bias_table")[0] ** 0.5)) + 1
    ) // 2
    image_size = TaggerConfig.image_size
    mask = f"{ve}.0.blocks.1.attn_mask"
    if mask in state and len(depths) > 0:
        image_size = int(round(np.shape(state[mask])[0] ** 0.5)) * window * patch
    layers = 0
    while f"tagging_head.encoder.layer.{layers}.output.dense.weight" in state:
        layers += 1
    return TaggerConfig(
        image_size=image_size,
        patch_size=patch,
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=window,
        mlp_ratio=shape(f"{ve}.0.blocks.0.mlp.fc1.weight")[0] / embed_dim,
        embed_width=shape("image_proj.weight")[0],
        head_hidden=shape("wordvec_proj.weight")[0],
        head_layers=layers or TaggerConfig.head_layers,
        head_intermediate=shape("tagging_head.encoder.layer.0.intermediate.dense.weight")[0],
        num_classes=shape("label_embed")[0],
    )


def tagger_template(config: TaggerConfig) -> Any:
    s = config.image_size
    return abstract_params_of(RAMTagger(config), jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32))


def tagger_params_from_torch(
    state: Mapping[str, np.ndarray], config: TaggerConfig, *, source: str, template: Any = None
) -> dict[str, Any]:
    """Tagger params from a merged RAM state dict (LoRAs folded, see :func:`merge_lora`)."""
    return params_by_template(
        state,
        tagger_template(config) if template is None else template,
        source=source,
        target=f"RAM tagger (Swin depths {list(config.depths)}, {config.num_classes} classes)",
        owned_prefixes=OWNED,
        ignore=BUFFERS,
    )


def load_tagger(
    ram_path: str | os.PathLike[str],
    dape_path: str | os.PathLike[str] | None = None,
    *,
    config: TaggerConfig | None = None,
    tag_list: str | os.PathLike[str] | None = None,
    thresholds: str | os.PathLike[str] | None = None,
    delete_tag_index: Iterable[int] = (),
    antialias: bool = True,
    lora_alpha: float = 1.0,
    dtype: Any = jnp.float32,
    allow_unsafe_pickle: bool = False,
) -> Tagger:
    """DAPE (``dape_path`` given) or plain RAM as a :class:`Tagger`.

    ``config`` defaults to the sizes in the checkpoint (:func:`config_from_state`; Swin-L 384
    for RAM's release). ``tag_list`` /
    ``thresholds``: RAM's ``ram_tag_list.txt`` / ``ram_tag_list_threshold.txt`` (default: the
    vendored copies). ``delete_tag_index``: RAM's ``delete_tag_index`` ([] in OSEDiff and AdcSR).
    ``antialias``: the bilinear resize to 384 as torchvision >= 0.17 does it (AdcSR's
    environment); False gives torchvision 0.15 (OSEDiff's pinned torch 2.0.1); the two only
    differ for inputs larger than 384.
    """
    ram = read_ram_state_dict(ram_path, allow_unsafe_pickle=allow_unsafe_pickle)
    if config is None:
        try:
            config = config_from_state(ram)
        except CheckpointMismatchError as e:
            raise CheckpointMismatchError(
                str(ram_path), "RAM tagger", e.missing, hint="not a RAM checkpoint?"
            ) from None
    config = TaggerConfig(**{**config.to_dict(), "dtype": jnp.dtype(dtype).name})
    template = tagger_template(config)
    state: dict[str, np.ndarray] = {}
    _load_into(state, ram, config.head_layers)
    source = str(ram_path)
    if dape_path is not None:
        dape = read_ram_state_dict(dape_path, allow_unsafe_pickle=allow_unsafe_pickle)
        template_keys = {torch_key(p) for p in traverse_util.flatten_dict(template)}
        useful = [
            k
            for k in dape
            if k in template_keys or (k.endswith((".lora_A", ".lora_B")) and k.startswith(OWNED))
        ]
        if not useful:
            raise CheckpointMismatchError(
                str(dape_path),
                "RAM tagger (DAPE)",
                unexpected=sorted(dape)[:20],
                hint="no key of this file belongs to RAM's visual encoder or tagging head",
            )
        _load_into(state, dape, config.head_layers)
        source = f"{ram_path} + {dape_path}"
    state = merge_lora(state, alpha=lora_alpha, source=source)
    params = tagger_params_from_torch(state, config, source=source, template=template)
    tags, thr = read_tag_files(tag_list, thresholds)
    if len(tags) != config.num_classes:
        raise ValueError(
            f"{tag_list or 'the vendored ram_tag_list.txt'} has {len(tags)} tags, the checkpoint "
            f"{ram_path} has {config.num_classes} classes (label_embed)"
        )
    return Tagger(
        RAMTagger(config),
        to_device(params),
        tags,
        thr,
        delete_tag_index=tuple(int(i) for i in delete_tag_index),
        antialias=antialias,
    )
