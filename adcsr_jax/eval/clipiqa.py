"""CLIP-IQA (Wang et al., AAAI 2023) as pyiqa ``clipiqa`` computes it, in JAX/Flax.

Pipeline (pyiqa ``CLIPIQA.forward``, ``model_type='clipiqa'``, backbone RN50, pos_embedding=False):

1. Image in [0, 1] normalised with CLIP's mean/std at its own size (no resize, no crop).
2. OpenAI CLIP RN50 ``ModifiedResNet``: 3-conv stem + avg-pool, 4 bottleneck stages with
   anti-aliased (avg-pool) striding, attention pooling (32 heads) **without** the positional
   embedding (so any input size works) -> 1024-d image feature.
3. Text features of the ten prompts 'Good image', 'bad image', 'Sharp image', 'blurry image',
   'sharp edges', 'blurry edges', 'High resolution image', 'low resolution image',
   'Noise-free image', 'noisy image' (CLIP BPE tokens -> CLIP text transformer -> EOT token ->
   text projection); computed once when the metric is built.
4. logits = exp(logit_scale) * cos(image, text); softmax over each (positive, negative) pair;
   score = mean over the 5 pairs of the positive probability.

The encoders are ``adcsr_jax.models.clip``. Weights: OpenAI ``RN50.pt`` (TorchScript archive), by
``weights_path=``, ``--clipiqa-weights`` or ``$ADCSR_CLIP_RN50_WEIGHTS``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from adcsr_jax.eval.base import LearnedNoReference
from adcsr_jax.models.clip import HIGHEST, CLIPConfig, encode_image, encode_text
from adcsr_jax.weights.errors import resolve_weight_file

ENV_VAR = "ADCSR_CLIP_RN50_WEIGHTS"
FILENAME = "RN50.pt"
WHERE = (
    "OpenAI's CLIP release (the RN50 entry of clip.available_models(); URL in pyiqa's "
    "archs/clip_model.py, sha256 afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762)"
)
PROMPTS = (
    "Good image",
    "bad image",
    "Sharp image",
    "blurry image",
    "sharp edges",
    "blurry edges",
    "High resolution image",
    "low resolution image",
    "Noise-free image",
    "noisy image",
)


def clipiqa_scores(
    params: Any, images: jax.Array, text_features: jax.Array, cfg: CLIPConfig
) -> jax.Array:
    """Per-image CLIP-IQA score (N,) given the 10 prompt features (positive first in each pair)."""
    img = encode_image(params, images, cfg)
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = text_features / jnp.linalg.norm(text_features, axis=-1, keepdims=True)
    logits = jnp.exp(params["logit_scale"]) * jnp.dot(img, txt.T, precision=HIGHEST)
    probs = jax.nn.softmax(logits.reshape(logits.shape[0], -1, 2), axis=-1)
    return probs[..., 0].mean(axis=1)


class CLIPIQA(LearnedNoReference):
    """CLIP-IQA metric object (``adcsr_jax.eval.base.Metric``): higher is better, no reference."""

    name = "clipiqa"

    def __init__(
        self,
        params: dict[str, Any],
        cfg: CLIPConfig = CLIPConfig(),
        batch_size: int = 8,
        vocab_path: str | None = None,
    ) -> None:
        from adcsr_jax.models.clip_tokenizer import ClipTokenizer

        self.cfg = cfg
        params = jax.tree_util.tree_map(jnp.asarray, params)
        tokens = ClipTokenizer(vocab_path).tokenize(list(PROMPTS), cfg.context_length)
        self.text_features = jax.jit(partial(encode_text, cfg=cfg))(params, jnp.asarray(tokens))
        fn = jax.jit(partial(clipiqa_scores, cfg=cfg))
        super().__init__(params, batch_size, fn, self.text_features)


def create(
    weights_path: str | None = None,
    weights_dir: str | None = None,
    batch_size: int = 8,
    vocab_path: str | None = None,
) -> CLIPIQA:
    """Build CLIP-IQA from OpenAI ``RN50.pt`` (see module doc)."""
    from adcsr_jax.weights.iqa_clip import load_clip_params

    path = resolve_weight_file("CLIPIQA", weights_path, ENV_VAR, FILENAME, WHERE, weights_dir)
    params, cfg = load_clip_params(path)
    return CLIPIQA(params, cfg, batch_size, vocab_path)
