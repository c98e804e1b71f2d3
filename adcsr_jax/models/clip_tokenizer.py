"""CLIP's byte-level BPE tokenizer (OpenAI ``clip.simple_tokenizer``) without ``regex``/``ftfy``.

Same vocabulary (``adcsr_jax/assets/clip/bpe_simple_vocab_16e6.txt.gz``, package data; origin
and MIT licence beside it), same pre-tokenisation rule
(``<|startoftext|>``, ``<|endoftext|>``, the contractions 's 't 're 've 'm 'll 'd, runs of
letters, single digits/numerics, runs of other non-space symbols) implemented with
``unicodedata`` categories, and the same 77-token padding as ``clip.tokenize``.
Differences: ``ftfy.fix_text`` (mojibake repair) is not applied; HTML unescaping, whitespace
collapsing and lower-casing are.
"""

from __future__ import annotations

import gzip
import html
import os
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np

VOCAB_ENV = "ADCSR_CLIP_BPE_VOCAB"
_VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def default_vocab_path() -> Path:
    """``$ADCSR_CLIP_BPE_VOCAB``, else the copy shipped inside this package (``adcsr_jax/assets``)."""
    if os.environ.get(VOCAB_ENV):
        return Path(os.environ[VOCAB_ENV])
    return Path(__file__).resolve().parents[1] / "assets" / "clip" / _VOCAB_NAME


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _kind(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat[0] == "L":
        return "L"
    if cat[0] == "N":
        return "N"
    if ch.isspace():
        return "S"
    return "O"


def pre_tokenize(text: str) -> list[str]:
    """The pieces CLIP's regex ``findall`` yields (alternatives tried in the regex's order)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        rest = text[i:]
        low = rest.lower()
        special = next((s for s in _SPECIALS if low.startswith(s)), None)
        if special:
            out.append(rest[: len(special)])
            i += len(special)
            continue
        contraction = next((c for c in _CONTRACTIONS if low.startswith(c)), None)
        if contraction:
            out.append(rest[: len(contraction)])
            i += len(contraction)
            continue
        kind = _kind(text[i])
        if kind == "S":
            i += 1
            continue
        if kind == "N":
            out.append(text[i])
            i += 1
            continue
        j = i + 1
        while j < n and _kind(text[j]) == kind:
            j += 1
        out.append(text[i:j])
        i = j
    return out


class ClipTokenizer:
    """Byte-level BPE as OpenAI CLIP; ``tokenize`` gives the (N, 77) int32 ids of ``clip.tokenize``."""

    def __init__(self, vocab_path: str | os.PathLike[str] | None = None) -> None:
        path = Path(vocab_path) if vocab_path else default_vocab_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"CLIP BPE vocabulary not found at {path}: it ships inside adcsr_jax "
                f"(assets/clip/{_VOCAB_NAME}; also inside the PyPI package openai-clip, "
                f"clip/{_VOCAB_NAME}); reinstall adcsr-jax or set ${VOCAB_ENV} to its path."
            )
        with gzip.open(path) as fh:
            lines = fh.read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += list(_SPECIALS)
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache: dict[str, str] = {s: s for s in _SPECIALS}
        self.sot = self.encoder[_SPECIALS[0]]
        self.eot = self.encoder[_SPECIALS[1]]

    def bpe(self, token: str) -> str:
        """Apply the merges in rank order; returns space-separated symbols."""
        if token in self.cache:
            return self.cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:], strict=False)}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == best[0] and word[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        text = html.unescape(html.unescape(text)).strip()
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids: list[int] = []
        for piece in pre_tokenize(text):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(piece).split(" "))
        return ids

    def tokenize(self, texts: str | list[str], context_length: int = 77) -> np.ndarray:
        """(N, context_length) int32: SOT + BPE ids + EOT, zero-padded; too long raises."""
        texts = [texts] if isinstance(texts, str) else texts
        out = np.zeros((len(texts), context_length), np.int32)
        for i, t in enumerate(texts):
            ids = [self.sot, *self.encode(t), self.eot]
            if len(ids) > context_length:
                raise ValueError(f"text {t!r} is {len(ids)} tokens, over CLIP's {context_length}")
            out[i, : len(ids)] = ids
        return out
