"""The engine's small parts: config files and typed overrides, the ``adcsr train`` command line,
the logical-axis and FSDP sharding rules, paired LR/HR folders."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from PIL import Image

from adcsr_jax import cli
from adcsr_jax import sharding as shd
from adcsr_jax.data.paired import PairedFolderIterator, match_pairs
from adcsr_jax.train.config import base_config, flatten, load_config

CONFIG = Path(__file__).with_name("toy_config.py")


def test_load_config_merges_over_the_engine_defaults_and_types_overrides():
    c = load_config(
        f"{CONFIG}:4dev",
        [
            "--config.total_steps=9",
            "--config.checkpoint.asynchronous=false",
            "--config.toy.lr",
            "0.5",
            "--config.toy.inject_inf_steps=(1, 2)",
            "--config.data.degradation=adcsr",
            "--config.eval.every_steps=0",
        ],
    )
    assert c.mesh.data == 2 and c.mesh.fsdp == 2  # from the variant
    assert c.checkpoint.keep_every == 4 and c.log.tensorboard is False  # from the file
    assert c.max_nonfinite_in_a_row == 3 and c.export_at_end is True  # engine defaults
    assert c.total_steps == 9 and c.checkpoint.asynchronous is False
    assert c.toy.lr == 0.5 and isinstance(c.toy.lr, float)
    assert c.toy.inject_inf_steps == (1, 2)
    assert c.data.degradation == "adcsr"  # None in the file: parsed as a literal, else text
    assert set(base_config()) <= set(c)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.total_step=3", "did you mean total_steps"),
        ("--config.checkpoint.evry_steps=3", "did you mean every_steps"),
        ("--config.total_steps=three", "expected an integer"),
        ("--config.log.tensorboard=maybe", "expected true/false"),
        ("--config.mesh=3", "is a group"),
        ("--config.toy.inject_inf_steps=3", "expected a list/tuple"),
        ("config.seed=1", "expected --config.KEY=VALUE"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(f"{CONFIG}:8dev", [override])


def test_bad_config_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.py")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="no get_config"):
        load_config(tmp_path / "empty.py")
    with pytest.raises(ValueError, match="unknown variant"):
        load_config(f"{CONFIG}:16dev")


def test_flatten_gives_scalar_hparams():
    flat = flatten(ml_collections.ConfigDict({"a": {"b": 1, "c": (1, 2)}, "d": None}))
    assert flat == {"a.b": 1, "a.c": "(1, 2)", "d": "None"}


def test_cli_collects_config_overrides(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        "adcsr_jax.cli.train.run", lambda args: seen.update(vars(args)) or 0, raising=True
    )
    parser = cli.build_parser()
    args, extra = parser.parse_known_args(
        ["train", "--config", "c.py:tiny", "--workdir", "w", "--config.a=1", "--config.b", "2"]
    )
    assert args.config == "c.py:tiny" and args.workdir == "w"
    assert extra == ["--config.a=1", "--config.b", "2"]
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", "c.py", "--workdir", "w", "--bogus"])
    with pytest.raises(SystemExit):
        cli.main(["infer", "--config.a=1"])


def test_cli_print_config(capsys):
    assert (
        cli.main(
            [
                "train",
                "--config",
                f"{CONFIG}:1dev",
                "--workdir",
                "w",
                "--print-config",
                "--config.seed=11",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "seed: 11" in out and "tests.train.toy_stage" in out


def test_logical_rules_and_fsdp_rule():
    mesh = shd.make_mesh(data=2, fsdp=2, tensor=2)
    rules = shd.DEFAULT_RULES
    # conv kernel (h, w, in, out): out over fsdp
    assert shd.logical_to_spec(
        shd_axes := ("conv_h", "conv_w", "conv_in", "conv_out"), (3, 3, 64, 128), mesh, rules
    ) == P(None, None, None, "fsdp")
    del shd_axes
    # attention q: (embed, heads) -> fsdp x tensor; a non-dividing size stays replicated
    assert shd.logical_to_spec(("embed", "heads"), (320, 320), mesh, rules) == P("fsdp", "tensor")
    assert shd.logical_to_spec(("embed", "heads"), (3, 320), mesh, rules) == P(None, "tensor")
    # one mesh axis per leaf: (embed, embed) shards only the first
    assert shd.logical_to_spec(("embed", "embed"), (8, 8), mesh, rules) == P("fsdp", None)
    with pytest.raises(ValueError, match="no sharding rule"):
        shd.logical_to_spec(("chanels",), (8,), mesh, rules)
    with pytest.raises(ValueError, match="not in the mesh"):
        shd.logical_to_spec(("embed",), (8,), mesh, [("embed", "model")])
    # shape-only FSDP: largest dividing dimension, small leaves replicated
    assert shd.fsdp_spec((3, 3, 320, 640), mesh, min_size=1) == P(None, None, None, "fsdp")
    assert shd.fsdp_spec((640, 3), mesh, min_size=1) == P("fsdp", None)
    assert shd.fsdp_spec((3, 5), mesh, min_size=1) == P()
    assert shd.fsdp_spec((640, 640), mesh, min_size=10**6) == P()
    assert shd.fsdp_spec((), mesh, min_size=0) == P()


def test_logical_to_sharding_and_place_a_tree():
    mesh = shd.make_mesh(data=-1, fsdp=2)
    tree = {"k": np.arange(4 * 6, dtype=np.float32).reshape(4, 6), "b": np.ones(6, np.float32)}
    specs = {
        "k": P("conv_in", "conv_out"),
        "b": P(
            "conv_out",
        ),
    }
    shardings = shd.logical_to_sharding(specs, tree, mesh, shd.DEFAULT_RULES)
    placed = shd.place(tree, shardings)
    assert placed["k"].sharding.spec == P(None, "fsdp")
    assert {s.data.shape for s in placed["k"].addressable_shards} == {(4, 3)}
    np.testing.assert_array_equal(np.asarray(placed["k"]), tree["k"])
    f = shd.fsdp_shardings(
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree), mesh, min_size=1
    )
    assert f["k"].spec == P(None, "fsdp") and f["b"].spec == P("fsdp")


@pytest.fixture
def pairs(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    (tmp_path / "lr" / "sub").mkdir(parents=True)
    (tmp_path / "hr" / "sub").mkdir(parents=True)
    for name in ("a", "b", "sub/c"):
        hr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        lr = hr[::4, ::4]  # pixel (i, j) of LR = pixel (4i, 4j) of HR: alignment is checkable
        Image.fromarray(hr).save(tmp_path / "hr" / f"{name}.png")
        Image.fromarray(lr).save(tmp_path / "lr" / f"{name}.png")
    Image.fromarray(lr).save(tmp_path / "lr" / "alone.png")
    return tmp_path / "lr", tmp_path / "hr"


def test_paired_folders_align_crops_and_resume(pairs):
    lr_dir, hr_dir = pairs
    assert [a for a, _ in match_pairs(lr_dir, hr_dir)] == ["a.png", "b.png", "sub/c.png"]
    kw = dict(
        batch_size=2,
        crop=16,
        scale=4,
        seed=1,
        output_dtype="uint8",
        process_index=0,
        process_count=1,
    )
    it = PairedFolderIterator(lr_dir, hr_dir, **kw)
    batches = [next(it) for _ in range(4)]
    for b in batches:
        assert b["gt"].shape == (2, 16, 16, 3) and b["lr"].shape == (2, 4, 4, 3)
        for i in range(2):  # LR pixel (i, j) is HR (4i, 4j); flipped, HR column 4j + 3
            assert np.array_equal(b["gt"][i, ::4, ::4], b["lr"][i]) or np.array_equal(
                b["gt"][i, ::4, 3::4], b["lr"][i]
            )
    it2 = PairedFolderIterator(lr_dir, hr_dir, **kw)
    next(it2)
    state = it2.get_state()
    it3 = PairedFolderIterator(lr_dir, hr_dir, **kw)
    it3.set_state(state)
    for b in batches[1:]:
        got = next(it3)
        np.testing.assert_array_equal(got["gt"], b["gt"])
        np.testing.assert_array_equal(got["lr"], b["lr"])
    with pytest.raises(ValueError, match="process_count"):
        PairedFolderIterator(lr_dir, hr_dir, **{**kw, "batch_size": 2}).set_state(
            {**state, "process_count": 2}
        )


def test_paired_folders_reject_wrong_sizes(pairs, tmp_path):
    lr_dir, hr_dir = pairs
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(hr_dir / "a.png")
    it = PairedFolderIterator(
        lr_dir, hr_dir, batch_size=3, crop=16, seed=0, process_index=0, process_count=1
    )
    with pytest.raises(ValueError, match=r"a.png is 40x40, expected 4 x its LR"):
        for _ in range(3):
            next(it)
    with pytest.raises(FileNotFoundError, match="no file names in common"):
        match_pairs(lr_dir, tmp_path / "lr" / "sub")
