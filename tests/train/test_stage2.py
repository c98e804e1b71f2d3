"""Stage 2 against a PyTorch step that follows AdcSR ``train.py`` (diffusers + peft, tiny random
networks, same weights and batch, fp32), and the stage's options, export and config.

One compiled Flax step is shared by the module (fixtures), the torch reference runs once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from adcsr_jax import cli  # noqa: E402
from adcsr_jax.models.discriminator import discriminator_unet_params  # noqa: E402
from adcsr_jax.sharding import make_mesh  # noqa: E402
from adcsr_jax.testing import reference as ref  # noqa: E402
from adcsr_jax.testing import torch_adcsr as T  # noqa: E402
from adcsr_jax.testing.torch_stage2 import (  # noqa: E402
    TorchStage2,
    adam_moments,
    build_torch_discriminator,
    disc_trainable,
)
from adcsr_jax.train import stage2  # noqa: E402
from adcsr_jax.weights.lora_peft import load_peft_adapters, lora_from_peft, lora_to_peft  # noqa: E402
from adcsr_jax.weights.mapping import params_to_torch  # noqa: E402
from adcsr_jax.weights.stage2_weights import stage2_weights_from_torch, tiny_configs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LQ = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
GT = np.random.default_rng(1).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)


def get_config(variant: str = "tiny"):
    spec = importlib.util.spec_from_file_location("stage2_config", ROOT / "configs" / "stage2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.fixture(scope="module")
def torch_nets():
    sd_unet = ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=1)
    half = T.torch_half_decoder(T.TINY_HALF_DECODER_CONFIG, seed=2)
    t_unet = ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=3)
    t_vae = ref.torch_vae(T.TINY_SD_VAE_CONFIG, seed=4)
    sd_vae = ref.torch_vae(T.TINY_SD_VAE_CONFIG, seed=5)
    disc = build_torch_discriminator(sd_unet, feature_channels=64, rank=4)
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():  # a "trained" D: B != 0, so A gets gradients too
        for name, p in disc.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    net, _ = T.build_torch_student(sd_unet, half)
    sds = [ref.state_dict_numpy(m) for m in (sd_unet, sd_vae, half, t_unet, t_vae)]
    return {"net": net, "disc": disc, "t_unet": t_unet, "t_vae": t_vae, "sd_vae": sd_vae,
            "half": half, "state_dicts": sds}  # fmt: skip


def _flax_state(config, torch_nets):
    weights = stage2_weights_from_torch(*torch_nets["state_dicts"], tiny_configs())
    nets = stage2.build_nets(config, weights)
    state = stage2.init_state(config, weights, nets, jax.random.key(0))
    disc = state["train"]["disc"]
    base = discriminator_unet_params(disc, state["frozen"]["disc"])
    # Copies: the torch step later updates D in place, and these buffers would follow it.
    peft_sd = ref.state_dict_numpy(torch_nets["disc"])
    disc["lora"] = lora_from_peft(peft_sd, nets.disc.specs, base, source="torch D")
    state["train"]["opt_d"] = stage2.optimizers(config)[1].init(disc)
    return nets, state


# XLA:CPU spends most of this test compiling the whole step (teacher, student and D forward and
# backward); LLVM's expensive passes only make the code faster, not different in value.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compile(step, state, batch):
    return jax.jit(step).lower(state, batch, jax.random.key(1)).compile(FAST_COMPILE)


@pytest.fixture(scope="module")
def base(torch_nets):
    config = get_config("tiny")
    config.optim.lr_g = 1e-4  # train.py's (the torch reference's); tiny trains at 1e-3
    nets, state = _flax_state(config, torch_nets)
    batch = {"lr": jnp.asarray(LQ), "gt": jnp.asarray(GT)}
    step = _compile(stage2.make_step(config, nets), state, batch)
    new_state, metrics = step(state, batch, jax.random.key(1))
    return config, nets, state, jax.device_get(new_state), jax.device_get(metrics)


@pytest.fixture(scope="module")
def torch_step(torch_nets, base):
    text = torch.from_numpy(np.broadcast_to(base[2]["frozen"]["prompt"], (2, 77, 32)).copy())
    t = TorchStage2(torch_nets["net"], torch_nets["disc"], torch_nets["t_vae"],
                    torch_nets["t_unet"], torch_nets["sd_vae"], torch_nets["half"])  # fmt: skip
    net_before = {k: v.detach().clone().numpy() for k, v in t.net.named_parameters()}
    d_before = {k: v.detach().clone().numpy() for k, v in disc_trainable(t.disc).items()}
    losses = t.step(ref.nchw(LQ), ref.nchw(GT), text)
    net_after = {k: v.detach().numpy() for k, v in t.net.named_parameters()}
    d_named = disc_trainable(t.disc)
    d_after = {k: v.detach().numpy() for k, v in d_named.items()}
    return {"losses": losses, "net_before": net_before, "net_after": net_after,
            "d_before": d_before, "d_after": d_after,
            "net_adam": adam_moments(t.opt_g, dict(t.net.named_parameters())),
            "d_adam": adam_moments(t.opt_d, d_named)}  # fmt: skip


def _student_torch(tree) -> dict[str, np.ndarray]:
    """Flax student (or moment) tree -> the torch Net's parameter names (body.1 / body.2)."""
    flat = params_to_torch(tree)
    out = {}
    for key, value in flat.items():
        if key.startswith("unet."):
            out["body.1." + key[len("unet.") :]] = value
        elif key.startswith("mid_block."):
            out["body.2." + key[len("mid_block.") :]] = value
    return out


def _disc_torch(tree) -> dict[str, np.ndarray]:
    """Flax D trainable (or moment) tree -> torch names (PEFT ``lora_A.<adapter>``, conv_in base)."""
    out = lora_to_peft(tree["lora"], prefix="")
    for key, value in params_to_torch(tree["unet"]).items():
        out[key.replace("conv_in.", "conv_in.base_layer.", 1)] = value
    return out


def _compare_trees(got: dict, want: dict, rel: float, what: str) -> None:
    """Relative to the whole tree's norm: biases in front of a one-channel-per-group GroupNorm
    have a zero gradient in exact arithmetic, so both sides hold rounding noise there (measured:
    per-leaf rel error 1.8 on up_blocks.3.resnets.2.conv1.bias)."""
    assert sorted(got) == sorted(want), what
    total = float(np.sqrt(sum(np.sum(np.square(want[k])) for k in want)))
    worst = max(((k, float(np.linalg.norm(got[k] - want[k])) / total) for k in want),
                key=lambda kv: kv[1])  # fmt: skip
    assert worst[1] <= rel, f"{what}: worst leaf {worst[0]} error / tree norm {worst[1]:.2e}"


@pytest.mark.slow  # the tiny stage-2 step compiles for 6-8 min on 2 idle cores (28 under load)
def test_one_step_equals_torch_train_py(base, torch_step) -> None:
    _, _, state, new, metrics = base
    for key, value in torch_step["losses"].items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-5, err_msg=key)
    assert metrics["lr/g"] == np.float32(1e-4) and metrics["lr/d"] == np.float32(1e-6)
    # Adam moments after one step are 0.1 g and 0.001 g^2: the gradients themselves.
    opt_g, opt_d = new["train"]["opt_g"].inner_state[0], new["train"]["opt_d"].inner_state[0]
    _compare_trees(_student_torch(opt_g.mu), torch_step["net_adam"]["exp_avg"], 1e-4, "G exp_avg")
    _compare_trees(_student_torch(opt_g.nu), torch_step["net_adam"]["exp_avg_sq"], 2e-4, "G sq")
    _compare_trees(_disc_torch(opt_d.mu), torch_step["d_adam"]["exp_avg"], 1e-4, "D exp_avg")
    _compare_trees(_disc_torch(opt_d.nu), torch_step["d_adam"]["exp_avg_sq"], 2e-4, "D sq")
    for name, got_new, got_old, want_new, want_old, mu, lr in (
        ("student", _student_torch(new["train"]["student"]),
         _student_torch(state["train"]["student"]), torch_step["net_after"],
         torch_step["net_before"], _student_torch(opt_g.mu), 1e-4),
        ("disc", _disc_torch(new["train"]["disc"]), _disc_torch(state["train"]["disc"]),
         torch_step["d_after"], torch_step["d_before"], _disc_torch(opt_d.mu), 1e-6),
    ):  # fmt: skip
        assert sorted(got_new) == sorted(want_new), name
        for key in want_new:
            np.testing.assert_allclose(got_old[key], want_old[key], rtol=0, atol=0, err_msg=key)
        _same_adam_update(got_new, want_new, mu, lr, name)
        moved = np.concatenate([(got_new[k] - got_old[k]).ravel() for k in want_new])
        assert np.abs(moved).max() > 0  # the step changed the params


def _flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(tree)}  # fmt: skip


def _same_adam_update(got, want, mu, lr: float, what: str, atol: float = 1e-7) -> None:
    """Parameters after the same first Adam step: the update is -lr * g / (|g| + eps), about
    -lr * sign(g), so an element whose gradient is at fp32 noise level moves by whatever its
    rounding says (measured: one of 4608 GEGLU kernel elements off by 0.2 lr against torch;
    remat and accumulation reorder sums the same way). Those elements (|mu| below 1e-4 of the
    tree's largest) may differ by up to 2 lr; every other one matches at rtol 1e-5."""
    got, want, mu = _flat(got), _flat(want), _flat(mu)
    assert sorted(got) == sorted(want) == sorted(mu), what
    floor = 1e-4 * max(float(np.abs(v).max()) for v in mu.values())
    for key in want:
        noisy = np.abs(mu[key]) < floor
        np.testing.assert_allclose(np.where(noisy, want[key], got[key]), want[key], rtol=1e-5,
                                   atol=atol, err_msg=f"{what} {key}")  # fmt: skip
        assert np.all(np.abs(got[key] - want[key])[noisy] <= 2 * lr + 1e-7), f"{what} {key}"


def _same_adam_states(got, want, what: str) -> None:
    """Adam moments (0.1 g and 0.001 g^2 after one step) relative to their tree's norm (the
    per-leaf rule of :func:`_compare_trees`)."""
    got_mu, got_nu = got.inner_state[0].mu, got.inner_state[0].nu
    want_mu, want_nu = want.inner_state[0].mu, want.inner_state[0].nu
    _compare_trees(_flat(got_mu), _flat(want_mu), 1e-5, f"{what} mu")
    _compare_trees(_flat(got_nu), _flat(want_nu), 2e-5, f"{what} nu")


@pytest.mark.slow  # a second whole-step compile (minutes on a shared 2-core CPU)
def test_remat_gives_the_same_step(base, torch_nets) -> None:
    config, _, state, new, metrics = base
    config = config.copy_and_resolve_references()
    config.remat = True
    nets = stage2.build_nets(config, stage2_weights_from_torch(*torch_nets["state_dicts"],
                                                               tiny_configs()))  # fmt: skip
    assert nets.student.remat and nets.disc.unet.remat
    batch = {"lr": jnp.asarray(LQ), "gt": jnp.asarray(GT)}
    got, got_m = jax.device_get(
        _compile(stage2.make_step(config, nets), state, batch)(state, batch, jax.random.key(1))
    )
    for key in metrics:
        np.testing.assert_allclose(got_m[key], metrics[key], rtol=1e-5, err_msg=key)
    g, n = got["train"], new["train"]
    _same_adam_states(g["opt_g"], n["opt_g"], "G")
    _same_adam_states(g["opt_d"], n["opt_d"], "D")
    _same_adam_update(g["student"], n["student"], n["opt_g"].inner_state[0].mu, 1e-4, "student")
    _same_adam_update(g["disc"], n["disc"], n["opt_d"].inner_state[0].mu, 1e-6, "disc")


@pytest.mark.slow  # a second whole-step compile (minutes on a shared 2-core CPU)
def test_grad_accum_2_equals_1(base, torch_nets) -> None:
    config, nets, state, new, metrics = base
    config = config.copy_and_resolve_references()
    config.grad_accum = 2
    batch = {"lr": jnp.asarray(LQ), "gt": jnp.asarray(GT)}
    got, got_m = jax.device_get(
        _compile(stage2.make_step(config, nets), state, batch)(state, batch, jax.random.key(1))
    )
    for key in metrics:
        if key.startswith(("loss/", "d/")):  # means of equal halves = the batch mean
            np.testing.assert_allclose(got_m[key], metrics[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(got_m["grad_norm/g"], metrics["grad_norm/g"], rtol=1e-4)
    g, n = got["train"], new["train"]
    mu = n["opt_g"].inner_state[0].mu
    _same_adam_update(g["student"], n["student"], mu, 1e-4, "student", atol=2e-6)  # 0.02 lr


def test_export_runs_in_infer_and_round_trips_official(torch_nets, tmp_path: Path) -> None:
    from adcsr_jax.weights.adcsr_ckpt import read_converted_params

    config = get_config("tiny")
    nets, new = _flax_state(config, torch_nets)  # no step: export needs none (and no compile)
    new["train"]["opt_g"] = new["train"]["opt_g"]._replace(count=jnp.asarray(1, jnp.int32))
    paths = stage2.make_export(config, nets)(new, tmp_path)
    student_dir = tmp_path / "student"
    assert student_dir in paths
    want = stage2.student_params(new)
    got = read_converted_params(student_dir)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    # `adcsr infer` runs the exported student
    from PIL import Image

    Image.fromarray((LQ[0] * 255).astype(np.uint8)).save(tmp_path / "x.png")
    assert cli.main(["infer", "--weights", str(student_dir), "--input", str(tmp_path / "x.png"),
                     "--output", str(tmp_path / "sr")]) == 0  # fmt: skip
    assert Image.open(tmp_path / "sr" / "x.png").size == (64, 64)
    # official layout: loads strictly into torch (test.py) and back through `adcsr convert adcsr`
    net_pkl, half_ckpt = (
        tmp_path / "official" / "net_params_1.pkl",
        tmp_path / "official" / "halfDecoder.ckpt",
    )
    assert net_pkl in paths and half_ckpt in paths
    net, _ = T.build_torch_student(ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=9),
                                   T.torch_half_decoder(T.TINY_HALF_DECODER_CONFIG, seed=9))  # fmt: skip
    sd = torch.load(net_pkl, weights_only=True)
    assert all(k.startswith("module.") for k in sd)
    net.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()}, strict=True)
    half = T.torch_half_decoder(T.TINY_HALF_DECODER_CONFIG, seed=9)
    half_sd = torch.load(half_ckpt, weights_only=True)["state_dict"]
    half.load_state_dict({k.removeprefix("decoder."): v for k, v in half_sd.items()}, strict=True)
    np.testing.assert_array_equal(  # the frozen stem, not a placeholder
        half.conv_in.weight.detach().numpy(),
        params_to_torch(new["frozen"]["half_stem"])["conv_in.weight"],
    )
    back = tmp_path / "back"
    assert cli.main(["convert", "adcsr", "--net", str(net_pkl), "--half-decoder", str(half_ckpt),
                     "--out", str(back)]) == 0  # fmt: skip
    for a, b in zip(jax.tree.leaves(read_converted_params(back)), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)
    # the CLI command writes the same files
    assert (
        cli.main(
            [
                "convert",
                "export-official",
                "--weights",
                str(student_dir),
                "--out",
                str(tmp_path / "cli"),
                "--step",
                "1",
                "--half-decoder",
                str(half_ckpt),
            ]
        )
        == 0
    )
    again = torch.load(tmp_path / "cli" / "net_params_1.pkl", weights_only=True)
    assert sorted(again) == sorted(sd)
    # D's adapters in PEFT naming load back
    lora = load_peft_adapters(
        tmp_path / "discriminator_lora",
        nets.disc.specs,
        discriminator_unet_params(new["train"]["disc"], new["frozen"]["disc"]),
    )
    for a, b in zip(jax.tree.leaves(lora), jax.tree.leaves(new["train"]["disc"]["lora"])):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "discriminator_lora" / "conv_in.safetensors").is_file()


def test_configs_and_build() -> None:
    tiny, full = get_config("tiny"), get_config("full")
    assert (full.data.batch_size, full.data.crop, full.total_steps) == (96, 512, 200_000)
    assert tuple(full.optim.milestones) == (100_000,) and full.optim.lr_d == 1e-6
    assert tiny.prompt.source == "tagger" and tiny.model.source == "random"
    with pytest.raises(ValueError, match="variant"):
        get_config("huge")
    stage = stage2.build(tiny, make_mesh(devices=jax.devices()[:1]))
    assert stage.name == "stage2" and stage.batch_keys == ("lr", "gt") and stage.evaluate
    assert tiny.eval.lr_dir == "sample:val" and tiny.data.source == "sample:train"
    shapes = jax.eval_shape(stage.init, jax.random.key(0))
    assert sorted(shapes["train"]) == ["disc", "opt_d", "opt_g", "student"]
    assert sorted(shapes["frozen"]) == ["disc", "half_stem", "sd_vae", "student_tail", "tagger",
                                        "teacher", "text_encoder"]  # fmt: skip
    tiny.prompt.source = "fixed"
    shapes = jax.eval_shape(stage2.build(tiny, make_mesh(devices=jax.devices()[:1])).init,
                            jax.random.key(0))  # fmt: skip
    assert "prompt" in shapes["frozen"] and "tagger" not in shapes["frozen"]
    mesh = make_mesh(devices=jax.devices()[:1])
    nets = stage2.build_nets(tiny, stage2.load_weights(tiny))
    shardings = stage2.state_shardings(mesh, (("conv_out", "fsdp"),), nets, shapes)
    kernel = shardings["train"]["student"]["unet"]["conv_in"]["kernel"]
    assert kernel.spec == jax.sharding.PartitionSpec(None, None, None, "fsdp")
    mu = shardings["train"]["opt_g"].inner_state[0].mu["unet"]["conv_in"]["kernel"]
    assert mu.spec == kernel.spec
    assert shardings["frozen"]["prompt"].spec == jax.sharding.PartitionSpec()


def test_lr_schedule_halves_at_the_milestone() -> None:
    sched = stage2.lr_schedule(1e-4, (100_000,), 0.5)
    assert float(sched(99_999)) == pytest.approx(1e-4) and float(sched(100_000)) == pytest.approx(
        5e-5
    )


def test_bad_prompt_file_is_named(tmp_path: Path) -> None:
    config = get_config("tiny")
    np.save(tmp_path / "p.npy", np.zeros((77, 5), np.float32))
    config.prompt.embedding = str(tmp_path / "p.npy")
    with pytest.raises(ValueError, match=r"p\.npy.*\(77, 32\)"):
        stage2.prompt_embedding(config, 32)
    config.prompt.source = "text"
    with pytest.raises(ValueError, match="'fixed' or 'tagger'"):
        stage2.load_prompt(config, 32)
    config.prompt.source, config.model.source = "tagger", "files"
    with pytest.raises(ValueError, match=r"config\.prompt\.ram"):
        stage2.load_prompt(config, 32)


def test_batch_prompts_are_the_tags_of_each_lr_through_the_text_encoder() -> None:
    """The on-device prompt path of the step equals the host path (tags as strings, the
    tokenizer, the text encoder), image by image; the tag count is the tagger's."""
    from adcsr_jax.models.tagger import prompt_embeddings

    config = get_config("tiny")
    weights = stage2.load_weights(config)
    prompt = stage2.load_prompt(config, 32)
    nets = stage2.build_nets(config, weights, prompt)
    assert nets.prompt.tagger.params is None and nets.prompt.text_params is None
    state = stage2.init_state(config, weights, nets, jax.random.key(0), prompt)
    lr = np.random.default_rng(0).random((4, 16, 16, 3), np.float32)
    lr[1] = 0.0  # a flat image: other tags than the textured ones
    emb, tags = jax.jit(lambda f, x: stage2.batch_prompts(nets, f, x))(state["frozen"], lr)
    want = prompt_embeddings(prompt.tagger, (prompt.text_module, prompt.text_params), lr)
    np.testing.assert_allclose(np.asarray(emb), np.asarray(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(tags), prompt.tagger.predictions(lr).sum(1))
    assert emb.shape == (4, 77, 32) and len(set(prompt.tagger.tags(lr))) > 1


def test_per_batch_prompt_program_feeds_the_step() -> None:
    """``prompt.program='batch'`` (default): the stage's ``prepare`` computes the batch's
    prompts once and the step reads them (the tagger and text encoder are no inputs of the
    step's program); ``'step'`` keeps them inside the step; fixed prompts need no program."""
    config = get_config("tiny")
    mesh = make_mesh(devices=jax.devices()[:1])
    stage = stage2.build(config, mesh)
    assert stage.prepare is not None
    state = jax.tree.map(jnp.asarray, stage.init(jax.random.key(0)))
    batch = {
        "lr": jnp.asarray(np.concatenate([LQ, LQ[::-1]])),
        "gt": jnp.asarray(GT[:1].repeat(4, 0)),
    }
    nets = stage2.build_nets(config, stage2.load_weights(config), stage2.load_prompt(config, 32))
    extra, (want, tags) = jax.jit(  # one program: the tagger compiles once
        lambda f, b: (stage.prepare(f, b), stage2.batch_prompts(nets, f, b["lr"]))
    )(state["frozen"], batch)
    np.testing.assert_allclose(np.asarray(extra["text"]), np.asarray(want), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(extra["tags"]), np.asarray(tags, np.float32))

    # The step with the prepared prompts traces without the tagger and text encoder at all;
    # the step without them needs both.
    rng = jax.random.key(1)
    frozen = {k: v for k, v in state["frozen"].items() if k not in ("tagger", "text_encoder")}
    lean = {**state, "frozen": frozen}
    metrics = jax.eval_shape(stage.step, lean, {**batch, **extra}, rng)[1]
    with pytest.raises(KeyError):
        jax.eval_shape(stage.step, lean, batch, rng)
    assert "prompt/tags_per_image" in metrics

    config.prompt.program = "step"
    assert stage2.build(config, mesh).prepare is None
    config.prompt.program = "cached"
    with pytest.raises(ValueError, match="prompt.program"):
        stage2.build(config, mesh)
    config.prompt.program, config.prompt.source = "batch", "fixed"
    assert stage2.build(config, mesh).prepare is None


def test_random_networks_take_the_vae_and_decoder_of_a_tiny_stage_1(tmp_path: Path) -> None:
    """``model.sd_vae`` / ``model.half_decoder`` with ``source='random'`` (what ``adcsr demo``
    passes from stage 1): used as given; the student's mid block and tail come from that decoder
    and the teacher's VAE has its config."""
    from flax import traverse_util

    from adcsr_jax.models.adcsr import random_params
    from adcsr_jax.models.vae import VAEConfig
    from adcsr_jax.weights.half_decoder import write_half_decoder_ckpt
    from adcsr_jax.weights.loaders import save_converted
    from adcsr_jax.weights.networks import decoder_template, vae_template

    vae_cfg = VAEConfig(block_out_channels=(64, 64, 128, 128))
    vae = random_params(vae_template(vae_cfg), 7)
    save_converted(tmp_path / "vae", "vae", vae_cfg, vae)
    half = random_params(decoder_template(VAEConfig(block_out_channels=(32, 32, 64, 64))), 8)
    write_half_decoder_ckpt(tmp_path / "halfDecoder.ckpt", half)
    config = get_config("tiny")
    config.model.sd_vae = str(tmp_path / "vae")
    config.model.half_decoder = str(tmp_path / "halfDecoder.ckpt")
    w = stage2.load_weights(config)

    def same(a, b) -> None:
        fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
        assert fa.keys() == fb.keys()
        for k in fa:
            np.testing.assert_allclose(np.asarray(fa[k]), np.asarray(fb[k]), rtol=0, atol=0)

    same(w.sd_vae["encoder"], vae["encoder"])
    same(w.half_stem["mid_block"], half["mid_block"])
    same(w.student["mid_block"], half["mid_block"])
    same(w.student["decoder"]["conv_out"], half["conv_out"])
    assert w.teacher_config.vae.block_out_channels == (64, 64, 128, 128)
    assert w.student_config.decoder_block_out_channels == (32, 32, 64, 64)
