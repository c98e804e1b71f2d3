"""The teacher's prompt path for training: the DAPE tagger, SD 2.1's tokenizer and text encoder.

AdcSR ``train.py`` conditions the teacher and the discriminator on
``text_encoder(tokenize(DAPE.generate_tag(ram_tf(LR))))`` (SPEC 4.2 step 2): the tags alone, no
user prompt. :func:`load_prompt_weights` reads the user's files; :func:`random_prompt_weights`
draws a small seeded tagger and text encoder of the same structure for the tiny configs and tests.
The networks are :mod:`adcsr_jax.models.tagger` and :mod:`adcsr_jax.models.text`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from adcsr_jax.models.adcsr import random_params
from adcsr_jax.models.tagger import RAMTagger, Tagger, TaggerConfig, TagTokens, read_tag_files
from adcsr_jax.models.text import CLIPTextTransformer, TextConfig, get_tokenizer
from adcsr_jax.weights.tagger import load_tagger, tagger_template
from adcsr_jax.weights.text_encoder import load_text_encoder, text_encoder_template


@dataclasses.dataclass(eq=False)
class PromptWeights:
    """Tagger (with its params), the tag -> token table, and the text encoder with its params."""

    tagger: Tagger
    tag_tokens: TagTokens
    text_module: CLIPTextTransformer
    text_params: Any

    @property
    def width(self) -> int:
        return self.text_module.config.hidden_size


def tiny_tagger_config(num_classes: int = 16) -> TaggerConfig:
    """A small RAM of the real structure (Swin stages with shifted windows, the tagging head)."""
    return TaggerConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(2, 2, 4),
        window_size=4, embed_width=16, head_hidden=24, head_heads=4, head_layers=2,
        head_intermediate=32, num_classes=num_classes,
    )  # fmt: skip


def tiny_text_config(width: int) -> TextConfig:
    """A 2-layer CLIP text transformer of ``width`` (SD 2.1's vocabulary and 77 positions)."""
    return TextConfig(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=2,
    )  # fmt: skip


def _np(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


def random_prompt_weights(
    width: int, seed: int = 0, num_classes: int = 16, *, full: bool = False
) -> PromptWeights:
    """Seeded random tagger (the first ``num_classes`` RAM tags, thresholds 0.5 so that random
    logits fire on some images) and text encoder of hidden size ``width``; ``full``: RAM Swin-L
    and SD 2.1's text encoder with random weights (:func:`abstract_prompt_weights`' structure,
    for benchmarks)."""
    if full:
        shapes = abstract_prompt_weights(width)
        tagger = dataclasses.replace(
            shapes.tagger, params=_np(random_params(shapes.tagger.params, seed))
        )
        text = _np(random_params(shapes.text_params, seed + 1))
        return dataclasses.replace(shapes, tagger=tagger, text_params=text)
    tags, _ = read_tag_files()
    tagger_cfg = tiny_tagger_config(num_classes)
    tagger = Tagger(
        RAMTagger(tagger_cfg),
        _np(random_params(tagger_template(tagger_cfg), seed)),
        tags[:num_classes],
        np.full(num_classes, 0.5, np.float32),
    )
    text_cfg = tiny_text_config(width)
    text_params = _np(random_params(text_encoder_template(text_cfg), seed + 1))
    tag_tokens = TagTokens.build(tagger.tag_list, get_tokenizer(), user_prompt=None)
    return PromptWeights(tagger, tag_tokens, CLIPTextTransformer(text_cfg), text_params)


def abstract_prompt_weights(
    width: int,
    *,
    tiny: bool = False,
    num_classes: int = 16,
    text_encoder: str | os.PathLike[str] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
) -> PromptWeights:
    """The prompt path with ``jax.ShapeDtypeStruct`` params, reading no weight file: RAM Swin-L
    384 (RAM's release, what :func:`load_prompt_weights` infers from ``ram_swin_large_14m.pth``;
    DAPE only adds LoRAs that are merged) and SD 2.1's text encoder (its ``config.json`` when
    ``text_encoder`` is a folder holding one, else :class:`TextConfig`'s SD 2.1 defaults), with
    the real tag list, thresholds and tag token table. ``tiny``: :func:`random_prompt_weights`'
    structure."""
    tags, thresholds = read_tag_files()
    if tiny:
        tagger_cfg = tiny_tagger_config(num_classes)
        text_cfg = tiny_text_config(width)
        tags, thresholds = tags[:num_classes], np.full(num_classes, 0.5, np.float32)
        tok = get_tokenizer()
    else:
        tagger_cfg = TaggerConfig()
        folder = Path(text_encoder) if text_encoder else None
        if folder is not None and (folder / "text_encoder" / "config.json").is_file():
            folder = folder / "text_encoder"
        cfg_file = folder / "config.json" if folder is not None else None
        if cfg_file is not None and cfg_file.is_file():
            text_cfg = TextConfig.from_transformers(json.loads(cfg_file.read_text()))
        else:
            text_cfg = TextConfig()
        if text_cfg.hidden_size != width:
            raise ValueError(
                f"text encoder width {text_cfg.hidden_size}, but the teacher UNet's "
                f"cross_attention_dim is {width} (SD 2.1-base: 1024)"
            )
        tok_dir = None  # absent folders: the bundled vocabulary (SD 2.1's)
        if (tokenizer and Path(tokenizer).is_dir()) or (folder is not None and folder.is_dir()):
            tok_dir = _tokenizer_dir(folder or Path(str(tokenizer)), tokenizer)
        tok = get_tokenizer(tok_dir)
    tagger = Tagger(RAMTagger(tagger_cfg), tagger_template(tagger_cfg), tags, thresholds)
    tag_tokens = TagTokens.build(tagger.tag_list, tok, user_prompt=None)
    text_module = CLIPTextTransformer(text_cfg)
    return PromptWeights(tagger, tag_tokens, text_module, text_encoder_template(text_cfg))


def _tokenizer_dir(text_encoder: Path, tokenizer: str | os.PathLike[str] | None) -> str | None:
    """``tokenizer`` if given; else SD 2.1's ``tokenizer/`` beside ``text_encoder/`` when there;
    else None (the vocabulary the package ships, which is SD 2.1's)."""
    if tokenizer:
        path = Path(tokenizer)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: tokenizer folder not found (SD 2.1's tokenizer/)")
        return str(path)
    root = text_encoder if (text_encoder / "tokenizer").is_dir() else text_encoder.parent
    return str(root / "tokenizer") if (root / "tokenizer").is_dir() else None


def load_prompt_weights(
    ram: str | os.PathLike[str],
    dape: str | os.PathLike[str] | None,
    text_encoder: str | os.PathLike[str],
    tokenizer: str | os.PathLike[str] | None = None,
    width: int | None = None,
) -> PromptWeights:
    """DAPE (RAM + ``DAPE.pth``; plain RAM when ``dape`` is None) and SD 2.1's text encoder
    (``text_encoder/`` folder or the SD 2.1 root); ``width``: the teacher UNet's
    ``cross_attention_dim``, checked against the encoder's hidden size."""
    tagger = load_tagger(ram, dape)
    tagger = dataclasses.replace(tagger, params=_np(tagger.params))
    module, params = load_text_encoder(text_encoder)
    if width is not None and module.config.hidden_size != width:
        raise ValueError(
            f"{text_encoder}: text encoder width {module.config.hidden_size}, but the teacher "
            f"UNet's cross_attention_dim is {width} (SD 2.1-base: 1024)"
        )
    tok = get_tokenizer(_tokenizer_dir(Path(text_encoder), tokenizer))
    tag_tokens = TagTokens.build(tagger.tag_list, tok, user_prompt=None)
    return PromptWeights(tagger, tag_tokens, module, _np(params))


__all__ = [
    "PromptWeights",
    "abstract_prompt_weights",
    "load_prompt_weights",
    "random_prompt_weights",
    "tiny_tagger_config",
    "tiny_text_config",
]
