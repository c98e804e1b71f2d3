"""``Stage.shapes`` of stages 1 and 2: the state tree ``adcsr plan`` compiles for, from the
architectures alone, against what ``init`` returns (tiny configs), and the full-size configs
shaped on a machine without SD 2.1, OSEDiff, RAM or DAPE files."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from adcsr_jax.sharding import make_mesh
from adcsr_jax.train import param_counts, stage1, stage2
from adcsr_jax.train.config import load_config
from adcsr_jax.train.loop import init_rng


def _mesh():
    return make_mesh(devices=jax.devices()[:1])


def assert_same_state(got, want) -> None:
    """Same tree, and every leaf the same shape and dtype."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        assert (a.shape, np.dtype(a.dtype)) == (np.shape(b), np.dtype(b.dtype)), path


def _count(tree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("prompt", ["tagger", "fixed"])
def test_stage2_tiny_shapes_equal_init(prompt: str) -> None:
    config = load_config("configs/stage2.py:tiny", [f"--config.prompt.source={prompt}"])
    stage = stage2.build(config, _mesh())
    shapes = stage.shapes()
    assert_same_state(shapes, jax.eval_shape(stage2.build(config, _mesh()).init, init_rng(0)))
    state = stage.init(init_rng(0))  # the real arrays, after shapes() (same build)
    assert_same_state(shapes, state)


@pytest.mark.parametrize("variant", ["taesd_tiny", "bksdm_tiny"])
def test_stage2_ablation_shapes_equal_init(variant: str) -> None:
    config = load_config(f"configs/ablations.py:{variant}")
    shapes = stage2.build(config, _mesh()).shapes()
    assert_same_state(shapes, jax.eval_shape(stage2.build(config, _mesh()).init, init_rng(0)))


def test_stage2_full_shapes_need_no_weight_files() -> None:
    """configs/stage2.py:full names no file (none is here): the state is still shaped, with the
    DAPE tagger (RAM Swin-L) and SD 2.1's text encoder, and agrees with ``--params-only``."""
    config = load_config("configs/stage2.py:full")
    assert not config.model.sd21 and not config.prompt.ram
    shapes = stage2.build(config, _mesh()).shapes()
    frozen, train = shapes["frozen"], shapes["train"]
    rows = {(r["network"], r["role"]): r["params"] for r in param_counts.stage2_counts(config)}
    assert _count(train["student"]) == rows[("student", "trainable")]
    assert _count(frozen["student_tail"]) == rows[("student", "frozen")]
    assert _count(frozen["teacher"]["unet"]) == rows[("teacher unet", "frozen")] == 865_910_724
    assert _count(train["disc"]) == rows[("discriminator", "trainable")]
    assert _count(frozen["disc"]) == rows[("discriminator", "frozen")]
    assert 340e6 < _count(frozen["text_encoder"]) < 341e6  # OpenCLIP ViT-H text tower, 23 layers
    assert 200e6 < _count(frozen["tagger"]) < 230e6  # Swin-L (197M) + the tagging head
    mu = train["opt_g"].inner_state[0].mu
    assert jax.tree.structure(mu) == jax.tree.structure(train["student"])


def test_stage2_init_rejects_weights_unlike_the_shapes_used() -> None:
    config = load_config("configs/stage2.py:tiny", ["--config.prompt.source=fixed"])
    stage = stage2.build(config, _mesh())
    stage.shapes()  # the derived architectures are now in use
    config.disc.rank = 8  # what init builds now differs (a config changed after shapes())
    with pytest.raises(ValueError, match="architectures differ"):
        jax.eval_shape(stage.init, init_rng(0))


@pytest.mark.parametrize("variant", ["tiny", "full"])
def test_stage1_shapes_equal_init(variant: str) -> None:
    config = load_config(f"configs/stage1.py:{variant}")
    stage = stage1.build(config, _mesh())
    shapes = stage.shapes()
    if variant == "tiny":
        assert_same_state(shapes, stage.init(init_rng(0)))
    else:  # nothing read: config.model.sd_vae / LPIPS weights are not on this machine
        assert _count(shapes["frozen"]["sd_encoder"]) > 30e6
        assert set(shapes["frozen"]["lpips"]) == set(stage1.random_lpips_vgg(0))
