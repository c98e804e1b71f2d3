"""LoRA with PEFT semantics: rank r, alpha, scaling alpha / r (2.0 for OSEDiff and AdcSR's r=4,
alpha=8 defaults).

This file holds the pure merge maths (used to fold released LoRA weights into base weights);
the Flax LoRA wrapper for training lives beside it.

Layouts are torch's: a Linear weight is (out, in) with ``lora_A`` (r, in) and ``lora_B``
(out, r); a conv weight is (out, in, kh, kw) with ``lora_A`` a conv of the base kernel size
(r, in, kh, kw) and ``lora_B`` a 1x1 conv (out, r, 1, 1).
"""

from __future__ import annotations

import numpy as np

PEFT_DEFAULT_ALPHA = 8.0


def lora_scaling(rank: int, alpha: float = PEFT_DEFAULT_ALPHA) -> float:
    """PEFT's ``scaling = lora_alpha / r``."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    return float(alpha) / float(rank)


def lora_delta(lora_a: np.ndarray, lora_b: np.ndarray, scale: float) -> np.ndarray:
    """``scale * B @ A`` in the base weight's layout (dense (out, in) or conv (out, in, kh, kw))."""
    a = np.asarray(lora_a, np.float32)
    b = np.asarray(lora_b, np.float32)
    if a.ndim == 2 and b.ndim == 2:
        if b.shape[1] != a.shape[0]:
            raise ValueError(f"LoRA ranks disagree: A {a.shape}, B {b.shape}")
        return np.float32(scale) * (b @ a)
    if a.ndim == 4 and b.ndim == 4:
        if b.shape[2:] != (1, 1) or b.shape[1] != a.shape[0]:
            raise ValueError(
                f"conv LoRA needs A (r,in,kh,kw) and B (out,r,1,1), got {a.shape}, {b.shape}"
            )
        delta = b[:, :, 0, 0] @ a.reshape(a.shape[0], -1)
        return np.float32(scale) * delta.reshape(b.shape[0], *a.shape[1:])
    raise ValueError(f"LoRA A {a.shape} and B {b.shape} are neither dense nor conv")


def merge_lora(
    weight: np.ndarray, lora_a: np.ndarray, lora_b: np.ndarray, scale: float
) -> np.ndarray:
    """``W + scale * B @ A`` (PEFT ``merge_and_unload``), fp32, same layout as ``weight``."""
    w = np.asarray(weight, np.float32)
    delta = lora_delta(lora_a, lora_b, scale)
    if delta.shape != w.shape:
        raise ValueError(f"LoRA update {delta.shape} does not fit base weight {w.shape}")
    return w + delta
