"""A small real stage for the engine tests: a per-pixel MLP denoiser trained with Adam on crops of the
bundled sample photos, through the same loop as stages 1 and 2.

``config.toy.inject_inf_steps``: steps (1-based, the loop's numbering) whose loss is replaced by
inf, recognised by the step's key (``loop.step_rng(loop.train_key(seed), step)``), to exercise
the NaN/inf guard deterministically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adcsr_jax import sharding as shd
from adcsr_jax.train import loop
from adcsr_jax.train.stage import Stage

TRACES: list[int] = []  # one entry per trace of the step (the compile-count test reads it)


def _dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum("bhwc,cd->bhwd", x, w, precision=jax.lax.Precision.HIGHEST) + b


def apply(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """A per-pixel residual MLP (1x1 convs): cheap to compile on XLA:CPU."""
    h = jnp.tanh(_dense(x, params["w1"], params["b1"]))
    return x + _dense(h, params["w2"], params["b2"])


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Stage:
    width = int(config.toy.width)
    sigma = float(config.toy.noise)
    opt = optax.adam(float(config.toy.lr))
    key = loop.train_key(config.seed)
    bad = [
        np.asarray(jax.random.key_data(loop.step_rng(key, s))) for s in config.toy.inject_inf_steps
    ]
    bad_keys = jnp.asarray(np.stack(bad)) if bad else None

    def init(rng: jax.Array) -> dict[str, Any]:
        k1, k2 = jax.random.split(rng)
        params = {
            "w1": np.asarray(jax.random.normal(k1, (3, width)) * 0.2),
            "b1": np.zeros((width,), np.float32),
            "w2": np.asarray(jax.random.normal(k2, (width, 3)) * 0.05),
            "b2": np.zeros((3,), np.float32),
        }
        crop = int(config.data.crop)
        pattern = np.asarray(jax.random.normal(jax.random.fold_in(rng, 1), (crop, crop, 3)))
        frozen = {"sigma": np.float32(sigma), "pattern": pattern}
        return {"train": {"params": params, "opt": opt.init(params)}, "frozen": frozen}

    def shapes() -> dict[str, Any]:
        """``init``'s tree as shapes (``adcsr plan``), allocating nothing."""
        f32 = jnp.float32
        params = {
            "w1": jax.ShapeDtypeStruct((3, width), f32),
            "b1": jax.ShapeDtypeStruct((width,), f32),
            "w2": jax.ShapeDtypeStruct((width, 3), f32),
            "b2": jax.ShapeDtypeStruct((3,), f32),
        }
        crop = int(config.data.crop)
        frozen = {
            "sigma": jax.ShapeDtypeStruct((), f32),
            "pattern": jax.ShapeDtypeStruct((crop, crop, 3), f32),
        }
        return {
            "train": {"params": params, "opt": jax.eval_shape(opt.init, params)},
            "frozen": frozen,
        }

    def shardings(shapes: Any) -> Any:
        return shd.fsdp_shardings(shapes, mesh, min_size=config.sharding.fsdp_min_size)

    def step(state, batch, rng):
        TRACES.append(1)
        gt = batch["gt"]
        # Per-sample noise levels from the step's key times a fixed pattern: a large
        # jax.random.normal takes seconds to compile on XLA:CPU, a (B,) uniform does not.
        level = jax.random.uniform(rng, (gt.shape[0], 1, 1, 1))
        noisy = gt + state["frozen"]["sigma"] * level * state["frozen"]["pattern"]
        params = state["train"]["params"]

        def loss_fn(p):
            return jnp.mean((apply(p, noisy) - gt) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        if bad_keys is not None:
            hit = jnp.any(jnp.all(bad_keys == jax.random.key_data(rng)[None], axis=-1))
            loss = jnp.where(hit, jnp.inf, loss)
        updates, opt_state = opt.update(grads, state["train"]["opt"], params)
        new = {"params": optax.apply_updates(params, updates), "opt": opt_state}
        metrics = {
            "loss/mse": loss,
            "grad_norm/all": optax.global_norm(grads),
            "lr/all": jnp.float32(config.toy.lr),
        }
        return {**state, "train": new}, metrics

    def evaluate(state, step: int, workdir: Path):
        # numpy only, so evaluating compiles nothing (the compile-count test relies on it)
        p = {k: np.asarray(v) for k, v in state["train"]["params"].items()}
        x = np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(1, 8, 8, 3)
        y = x + np.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        grid = (np.clip(np.concatenate([x, y], 2)[0], 0, 1) * 255).astype(np.uint8)
        return {"val/mse": float(np.mean((y - x) ** 2))}, {"val/grid": grid}

    def export(state, workdir: Path):
        out = Path(workdir) / "toy"
        out.mkdir(exist_ok=True)
        path = out / "params.npz"
        np.savez(path, **{k: np.asarray(v) for k, v in state["train"]["params"].items()})
        return [path]

    return Stage(
        name="toy",
        init=init,
        shardings=shardings,
        step=step,
        batch_keys=("gt",),
        evaluate=evaluate,
        export=export,
        hparams={"toy.width": width},
        shapes=shapes,
    )
