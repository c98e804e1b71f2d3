"""Gradient accumulation over micro-batches, so a large global batch (the paper's 96) fits on
small devices: the mean of per-micro-batch gradients of a mean loss equals the full-batch one.

Micro-batch ``j`` takes the rows ``j, j + n, j + 2n, ...`` of the global batch, so every
micro-batch keeps the batch's spread over the ``('data', 'fsdp')`` devices (a contiguous split
would leave most devices idle on each micro-step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def split_micro_batches(batch: Any, n: int) -> Any:
    """``(B, ...) -> (n, B / n, ...)`` per leaf, micro-batch ``j`` = rows ``j::n``."""

    def one(x: jax.Array) -> jax.Array:
        if x.shape[0] % n:
            raise ValueError(f"batch of {x.shape[0]} does not split into {n} micro-batches")
        return jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)

    return jax.tree.map(one, batch)


def accumulate(
    fn: Callable[[Any], tuple[Any, Any]], batch: Any, micro_batches: int
) -> tuple[Any, Any]:
    """Mean of ``fn(micro_batch)`` (a pytree pair, e.g. ``(grads, aux)``) over micro-batches.

    ``micro_batches == 1`` calls ``fn(batch)`` once. Otherwise a ``lax.scan`` runs ``fn`` on each
    micro-batch (one compiled body, activations of one micro-batch live at a time) and averages
    every leaf in float32.
    """
    if micro_batches <= 1:
        return fn(batch)
    micro = split_micro_batches(batch, micro_batches)
    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(fn, first)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

    def body(total: Any, mb: Any) -> tuple[Any, None]:
        out = fn(mb)
        return jax.tree.map(lambda t, o: t + o.astype(jnp.float32), total, out), None

    total, _ = jax.lax.scan(body, zeros, micro)
    return jax.tree.map(lambda t, s: (t / micro_batches).astype(s.dtype), total, shapes)
