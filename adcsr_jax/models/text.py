"""SD 2.1's text encoder (transformers ``CLIPTextModel``) and its tokenizer, in Flax / numpy.

The network is the OpenCLIP ViT-H text tower as diffusers pipelines load it from
``stable-diffusion-2-1-base/text_encoder/`` (transformers ``modeling_clip.CLIPTextTransformer``):
token + learned position embeddings, pre-LN transformer layers (causal self-attention with
q/k/v/out biases, MLP ``fc1`` -> GELU -> ``fc2``), a final LayerNorm; the output is the last
hidden state ``(B, 77, 1024)`` that the SD UNet cross-attends to. Param paths mirror the torch
names below ``text_model.`` (``encoder/layers_3/self_attn/q_proj/kernel``).

The tokenizer is SD 2.1's ``tokenizer/`` (transformers ``CLIPTokenizer``, byte-level BPE of
OpenAI CLIP): NFC, whitespace runs -> one space, lower case, CLIP's pre-tokenisation, BPE; then
``<|startoftext|>`` (49406) + at most 75 ids + ``<|endoftext|>`` (49407), padded with the pad
token (SD 2.1: ``!`` = id 0) to 77. It reads the checkpoint's ``vocab.json`` / ``merges.txt``
when given, else the BPE vocabulary the package ships (OpenAI ``bpe_simple_vocab_16e6.txt.gz``,
the same vocabulary). Known difference from transformers: the four control characters
U+001C..U+001F count as whitespace here (Python's ``str.isspace``), as symbols there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adcsr_jax.models.clip_tokenizer import (
    ClipTokenizer,
    bytes_to_unicode,
    default_vocab_path,
    pre_tokenize,
)
from adcsr_jax.models.config_utils import UnsupportedConfigError, check_supported, dtype_name
from adcsr_jax.nn.axes import dense
from adcsr_jax.nn.norm import LayerNorm

CONTEXT_LENGTH = 77
SD21_PAD_ID = 0  # SD 2.1's tokenizer pads with "!" (id 0), not with <|endoftext|>
_ACTIVATIONS = ("gelu", "quick_gelu")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """transformers ``CLIPTextConfig`` fields the network needs; defaults are SD 2.1's."""

    vocab_size: int = 49408
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 23
    num_attention_heads: int = 16
    max_position_embeddings: int = 77
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.hidden_act not in _ACTIVATIONS:
            raise UnsupportedConfigError(
                f"hidden_act {self.hidden_act!r} is not one of {list(_ACTIVATIONS)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise UnsupportedConfigError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"{self.num_attention_heads} attention heads"
            )
        object.__setattr__(self, "dtype", dtype_name(self.dtype))

    @classmethod
    def from_transformers(cls, raw: Mapping[str, Any], dtype: Any = "float32") -> TextConfig:
        """From a ``text_encoder/config.json`` (``CLIPTextModel``; a full ``CLIPConfig``'s
        ``text_config`` is used when present)."""
        raw = raw.get("text_config", raw) if isinstance(raw.get("text_config"), Mapping) else raw
        check_supported(raw, {"hidden_act": _ACTIVATIONS}, "CLIPTextConfig")
        names = {f.name for f in dataclasses.fields(cls)} - {"dtype"}
        return cls(**{k: raw[k] for k in names if k in raw}, dtype=dtype)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextConfig:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UnsupportedConfigError(f"TextConfig: unknown config fields {unknown}")
        return cls(**data)


def _activation(name: str, x: jax.Array) -> jax.Array:
    if name == "quick_gelu":
        return x * jax.nn.sigmoid(1.702 * x)
    return jax.nn.gelu(x, approximate=False)


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention: ``q_proj`` (scaled by head_dim^-0.5), ``k_proj``,
    ``v_proj``, ``out_proj``, all with bias; softmax in fp32."""

    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, width = x.shape
        hd = width // self.heads
        proj = lambda name: dense(width, ("embed", "heads"), dtype=self.dtype, name=name)  # noqa: E731
        split = lambda y: y.reshape(b, t, self.heads, hd)  # noqa: E731
        q = split(proj("q_proj")(x)) * jnp.asarray(hd**-0.5, self.dtype)
        k, v = split(proj("k_proj")(x)), split(proj("v_proj")(x))
        logits = jnp.einsum("bqnh,bknh->bnqk", q, k, preferred_element_type=jnp.float32)
        causal = jnp.tril(jnp.ones((t, t), bool))
        logits = jnp.where(causal, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bnqk,bknh->bqnh", weights, v).reshape(b, t, width)
        return dense(width, ("heads", "embed"), dtype=self.dtype, name="out_proj")(out)


class CLIPMLP(nn.Module):
    """``fc1`` -> GELU (erf; ``quick_gelu`` for OpenAI configs) -> ``fc2``."""

    config: TextConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        h = dense(cfg.intermediate_size, ("embed", "mlp"), dtype=dt, name="fc1")(x)
        h = _activation(cfg.hidden_act, h)
        return dense(cfg.hidden_size, ("mlp", "embed"), dtype=dt, name="fc2")(h)


class CLIPEncoderLayer(nn.Module):
    """Pre-LN block: ``layer_norm1`` -> ``self_attn`` -> +x; ``layer_norm2`` -> ``mlp`` -> +x."""

    config: TextConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        ln = lambda name: LayerNorm(cfg.layer_norm_eps, dtype=dt, name=name)  # noqa: E731
        x = x + CLIPAttention(cfg.num_attention_heads, dtype=dt, name="self_attn")(
            ln("layer_norm1")(x)
        )
        return x + CLIPMLP(cfg, name="mlp")(ln("layer_norm2")(x))


class CLIPEncoder(nn.Module):
    """``layers_0`` .. ``layers_{N-1}`` (torch ``encoder.layers.N``)."""

    config: TextConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            x = CLIPEncoderLayer(self.config, name=f"layers_{i}")(x)
        return x


class _Embeddings(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        init = lambda axes: nn.with_logical_partitioning(nn.initializers.normal(0.02), axes)  # noqa: E731
        tok = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            embedding_init=init(("vocab", "embed")),
            name="token_embedding",
        )
        pos = nn.Embed(
            cfg.max_position_embeddings,
            cfg.hidden_size,
            embedding_init=init((None, "embed")),
            name="position_embedding",
        )
        t = input_ids.shape[1]
        return tok(input_ids) + pos(jnp.arange(t))[None]


class CLIPTextTransformer(nn.Module):
    """``input_ids`` ``(B, T)`` int (T <= 77) -> last hidden state ``(B, T, hidden_size)``.

    Same output as ``CLIPTextModel(input_ids)[0]`` without an attention mask (how diffusers'
    SD pipelines and AdcSR ``train.py`` call it).
    """

    config: TextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        if input_ids.ndim != 2 or input_ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"input_ids must be (batch, <= {cfg.max_position_embeddings}) token ids, "
                f"got shape {tuple(input_ids.shape)}"
            )
        x = _Embeddings(cfg, name="embeddings")(input_ids).astype(jnp.dtype(cfg.dtype))
        x = CLIPEncoder(cfg, name="encoder")(x)
        return LayerNorm(cfg.layer_norm_eps, dtype=jnp.dtype(cfg.dtype), name="final_layer_norm")(x)


# --- tokenizer ---------------------------------------------------------------------------------

_SPACE_RUN = re.compile(r"\s+")


class Tokenizer(ClipTokenizer):
    """SD 2.1's CLIP tokenizer: ``tokenize(texts)`` -> ``(B, 77)`` int32 ids.

    ``tokenizer_dir``: a diffusers ``tokenizer/`` folder (``vocab.json``, ``merges.txt``, and
    optionally ``special_tokens_map.json`` / ``tokenizer_config.json`` for the pad token and
    ``model_max_length``); without it, the shipped BPE vocabulary and SD 2.1's pad id 0.
    """

    def __init__(self, tokenizer_dir: str | os.PathLike[str] | None = None) -> None:
        self.context_length = CONTEXT_LENGTH
        self._special_re: re.Pattern[str] | None = None
        if tokenizer_dir is None:
            super().__init__()
            self.pad_id = SD21_PAD_ID
            return
        folder = Path(tokenizer_dir)
        vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
        for f in (vocab_file, merges_file):
            if not f.is_file():
                raise FileNotFoundError(
                    f"{f}: missing (a CLIP tokenizer folder has vocab.json and merges.txt)"
                )
        try:
            self.encoder = json.loads(vocab_file.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{vocab_file}: invalid JSON: {e}") from e
        lines = merges_file.read_text(encoding="utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines if m and not m.startswith("#version")]
        bad = [m for m in merges if len(m) != 2]
        if bad:
            raise ValueError(f"{merges_file}: {len(bad)} line(s) are not 'a b' pairs: {bad[:3]}")
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache = {s: s for s in ("<|startoftext|>", "<|endoftext|>")}
        special = _special_tokens(folder)
        missing = [t for t in ("<|startoftext|>", "<|endoftext|>") if t not in self.encoder]
        if missing:
            raise ValueError(f"{vocab_file}: no entry for {missing}")
        self.sot = self.encoder["<|startoftext|>"]
        self.eot = self.encoder["<|endoftext|>"]
        pad = special.get("pad_token", "<|endoftext|>")
        if pad not in self.encoder:
            raise ValueError(f"{folder}: pad token {pad!r} is not in vocab.json")
        self.pad_id = self.encoder[pad]
        self.context_length = int(special.get("model_max_length", CONTEXT_LENGTH))

    def _specials(self) -> tuple[dict[str, int], re.Pattern[str]]:
        """transformers' added tokens (start, end, pad): matched verbatim in the raw text and
        never split, so SD 2.1's ``!`` is always its own token (id 0)."""
        if self._special_re is None:
            pad = next(t for t, i in self.encoder.items() if i == self.pad_id)
            ids = {t: self.encoder[t] for t in ("<|startoftext|>", "<|endoftext|>", pad)}
            alts = "|".join(re.escape(t) for t in sorted(ids, key=len, reverse=True))
            self._special_ids, self._special_re = ids, re.compile(f"({alts})")
        return self._special_ids, self._special_re

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` (no start/end tokens), normalised as transformers does."""
        specials, pattern = self._specials()
        ids: list[int] = []
        for segment in pattern.split(text):
            if segment in specials:
                ids.append(specials[segment])
                continue
            segment = unicodedata.normalize("NFC", segment)
            segment = "".join(c.lower() for c in _SPACE_RUN.sub(" ", segment))
            for piece in pre_tokenize(segment):
                piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self.bpe(piece).split(" "))
        return ids

    def tokenize(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """``(B, context_length)`` int32: start + ids (truncated, end token kept) + end + pads."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        n = context_length or self.context_length
        out = np.full((len(texts), n), self.pad_id, np.int32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"tokenize: text {i} is {type(t).__name__}, expected str")
            ids = [self.sot, *self.encode(t)[: n - 2], self.eot]
            out[i, : len(ids)] = ids
        return out


def _special_tokens(folder: Path) -> dict[str, Any]:
    """pad token and model_max_length from ``tokenizer_config.json`` / ``special_tokens_map.json``."""
    out: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{f}: invalid JSON: {e}") from e
        pad = data.get("pad_token")
        if isinstance(pad, Mapping):
            pad = pad.get("content")
        if isinstance(pad, str):
            out["pad_token"] = pad
        if isinstance(data.get("model_max_length"), int) and data["model_max_length"] < 10**6:
            out["model_max_length"] = data["model_max_length"]
    return out


@lru_cache(maxsize=4)
def get_tokenizer(tokenizer_dir: str | None = None) -> Tokenizer:
    """A cached :class:`Tokenizer` (the shipped vocabulary when ``tokenizer_dir`` is None)."""
    return Tokenizer(tokenizer_dir)


def tokenize(
    texts: Sequence[str], tokenizer_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """SD 2.1 token ids ``(B, 77)`` int32 of ``texts`` (see :class:`Tokenizer`)."""
    return get_tokenizer(None if tokenizer_dir is None else str(tokenizer_dir)).tokenize(texts)


def encode_text(
    module: CLIPTextTransformer,
    params: Any,
    texts: Sequence[str],
    tokenizer: Tokenizer | None = None,
) -> jax.Array:
    """Prompt embeddings ``(B, 77, hidden)``: tokenize on the host, then the jitted encoder."""
    ids = (tokenizer or get_tokenizer()).tokenize(texts)
    return _apply_jit(module, params, jnp.asarray(ids))


def _apply(module: CLIPTextTransformer, params: Any, ids: jax.Array) -> jax.Array:
    return module.apply({"params": params}, ids)


_apply_jit = jax.jit(_apply, static_argnums=0)


__all__ = [
    "CONTEXT_LENGTH",
    "CLIPTextTransformer",
    "ClipTokenizer",
    "TextConfig",
    "Tokenizer",
    "bytes_to_unicode",
    "default_vocab_path",
    "encode_text",
    "get_tokenizer",
    "tokenize",
]
