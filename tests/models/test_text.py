"""SD 2.1's text encoder against transformers ``CLIPTextModel``, and the tokenizer against
transformers ``CLIPTokenizer`` built from the same vocabulary (random weights; nothing downloaded)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from adcsr_jax.models.text import (  # noqa: E402
    ClipTokenizer,
    TextConfig,
    Tokenizer,
    bytes_to_unicode,
    default_vocab_path,
    encode_text,
    tokenize,
)
from adcsr_jax.weights import (  # noqa: E402
    CheckpointMismatchError,
    CheckpointReadError,
    load_text_encoder,
    write_safetensors,
)

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)


def _torch_text_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(**{**TINY, **overrides})
    model = transformers.CLIPTextModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine params
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _save_folder(model, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(model.config.to_json_string())
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    write_safetensors(folder / "model.safetensors", sd)
    return folder


def _compare(model, module, params, ids: np.ndarray, atol: float = 1e-4) -> float:
    with torch.no_grad():
        want = model(torch.from_numpy(ids.astype(np.int64)))[0].numpy()
    got = np.asarray(module.apply({"params": params}, jnp.asarray(ids)))
    assert got.shape == want.shape
    err = float(np.abs(got - want).max())
    assert err < atol, err
    return err


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_text_encoder_matches_transformers(tmp_path: Path, act: str) -> None:
    model = _torch_text_model(hidden_act=act)
    module, params = load_text_encoder(_save_folder(model, tmp_path / "text_encoder"))
    assert module.config.hidden_act == act and module.config.num_hidden_layers == 3
    rng = np.random.default_rng(0)
    ids = rng.integers(0, TINY["vocab_size"], (2, 77)).astype(np.int32)
    ids[1, 10:] = 0  # SD 2.1 pads with id 0
    _compare(model, module, params, ids)


def test_text_encoder_from_pipeline_root_bin_and_short_input(tmp_path: Path) -> None:
    model = _torch_text_model(seed=1)
    folder = tmp_path / "sd" / "text_encoder"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(model.config.to_json_string())
    sd = {f"text_model.{k}": v for k, v in model.state_dict().items()}  # SD 2.1's file names
    sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]  # old checkpoints keep it
    torch.save(sd, folder / "pytorch_model.bin")
    module, params = load_text_encoder(tmp_path / "sd")
    _compare(model, module, params, np.array([[5, 6, 7, 8, 9]], np.int32))


def test_text_encoder_errors_name_file_and_keys(tmp_path: Path) -> None:
    model = _torch_text_model()
    folder = _save_folder(model, tmp_path / "te")
    sd = {f"text_model.{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    del sd["text_model.encoder.layers.1.mlp.fc2.bias"]
    sd["text_model.encoder.layers.0.self_attn.q_proj.weight"] = np.zeros((3, 3), np.float32)
    sd["text_model.encoder.layers.9.extra.weight"] = np.zeros(1, np.float32)
    write_safetensors(folder / "model.safetensors", sd)
    with pytest.raises(CheckpointMismatchError) as e:
        load_text_encoder(folder)
    msg = str(e.value)
    assert str(folder / "model.safetensors") in msg
    assert "encoder.layers.1.mlp.fc2.bias" in msg
    assert "encoder.layers.0.self_attn.q_proj.weight: (3, 3) vs (32, 32)" in msg
    assert "encoder.layers.9.extra.weight" in msg
    with pytest.raises(CheckpointReadError, match="nothere"):
        load_text_encoder(tmp_path / "nothere")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointReadError, match="no weights file"):
        load_text_encoder(folder)


@pytest.mark.slow
def test_full_sd21_text_encoder_matches_transformers(tmp_path: Path) -> None:
    """SD 2.1's full config (23 layers, width 1024, 16 heads) with random weights."""
    cfg = dict(
        vocab_size=49408,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=23,
        num_attention_heads=16,
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=512,
    )
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**cfg)).eval()
    module, params = load_text_encoder(_save_folder(model, tmp_path / "te"))
    assert module.config == TextConfig()
    texts = ["a photo of a cat", "building, city, night, sky, street, tree, "]
    _compare(model, module, params, tokenize(texts))
    with torch.no_grad():
        want = model(torch.from_numpy(tokenize(texts).astype(np.int64)))[0].numpy()
    assert np.abs(np.asarray(encode_text(module, params, texts)) - want).max() < 1e-4


# --- tokenizer ---------------------------------------------------------------------------------


def _hf_tokenizer_files(folder: Path) -> Path:
    """vocab.json / merges.txt (as SD 2.1's tokenizer/ has them) from the shipped BPE file."""
    with gzip.open(default_vocab_path()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    specials = {"pad_token": "!", "model_max_length": 77}
    (folder / "tokenizer_config.json").write_text(json.dumps(specials))
    return folder


def _prompts() -> list[str]:
    rng = random.Random(0)
    words = [
        "a",
        "photo",
        "of",
        "the",
        "cat",
        "dog",
        "building",
        "city",
        "night",
        "sky",
        "street",
        "tree",
        "person",
        "woman",
        "man",
        "car",
        "road",
        "water",
        "mountain",
        "flower",
        "grass",
        "red",
        "blue",
        "green",
        "3D",
        "t-shirt",
        "mother's",
        "day",
        "don't",
        "it'll",
        "we've",
        "they're",
        "i'm",
        "you'd",
        "she's",
    ]
    punct = list(",.;:!?-_/\\()[]{}<>@#$%^&*+=~`'\"|")
    unicode_bits = [
        "café",
        "naïve",
        "Ünïcödé",
        "東京タワー",
        "北京",
        "한국어",
        "Привет мир",
        "ΟΔΟΣ",
        "emoji 😀🎉🐱",
        "e\u0301",
        "ﬁ ligature",
        "İstanbul",
        "١٢٣ ٤٥",
        "\u00a0nbsp\u2003em",
        "tab\tnew\nline",
        "ß straße",
        "<|endoftext|>",
        "<|startoftext|>hi",
        "&amp; &lt;",
        "Ⅻ roman",
        "½ ¾",
        "x²",
        "🇫🇷",
        "zero\u200bwidth",
    ]
    out = ["", " ", "a", "A PHOTO OF A CAT", "building, city, night, sky, street, tree, ,"]
    out += unicode_bits
    for _ in range(300):
        kind = rng.random()
        n = rng.randint(1, 120 if kind < 0.2 else 15)
        parts = []
        for _ in range(n):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(words))
            elif r < 0.8:
                parts.append("".join(rng.choices(punct, k=rng.randint(1, 4))))
            elif r < 0.9:
                parts.append(rng.choice(unicode_bits))
            else:
                parts.append(str(rng.randint(0, 100000)))
        sep = rng.choice([" ", ", ", "  ", ",", " \t "])
        out.append(sep.join(parts))
    return out


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    folder = _hf_tokenizer_files(tmp_path_factory.mktemp("tokenizer"))
    hf = transformers.CLIPTokenizer.from_pretrained(folder)  # as diffusers loads tokenizer/
    assert hf.pad_token_id == 0
    return folder, hf


def test_tokenizer_equals_transformers(hf_tokenizer) -> None:
    folder, hf = hf_tokenizer
    prompts = _prompts()
    assert len(prompts) > 300 and max(len(p) for p in prompts) > 600
    want = hf(prompts, padding="max_length", max_length=77, truncation=True)["input_ids"]
    want = np.asarray(want, np.int32)
    shipped = tokenize(prompts)
    from_files = Tokenizer(folder).tokenize(prompts)
    assert shipped.dtype == np.int32 and shipped.shape == (len(prompts), 77)
    for i, p in enumerate(prompts):
        assert shipped[i].tolist() == want[i].tolist(), p
    np.testing.assert_array_equal(from_files, shipped)
    assert shipped[0, :3].tolist() == [49406, 49407, 0]
    long = [i for i, p in enumerate(prompts) if (shipped[i] != 0).all()]
    assert long and all(shipped[i, -1] == 49407 for i in long)


def test_tokenizer_equals_open_clip_on_ordinary_prompts() -> None:
    """OpenAI/open_clip tokenization (the package's ``ClipTokenizer``, tested against it in
    tests/eval) gives the same ids on ordinary prompts, e.g. RAM tag lists."""
    reference = ClipTokenizer()
    prompts = [p for p in _prompts() if p.isascii() and not any(c in p for c in "&!<")]
    prompts = [p for p in prompts if len(reference.encode(p)) <= 75]
    assert len(prompts) > 80
    got, want = tokenize(prompts), reference.tokenize(prompts)
    for i, p in enumerate(prompts):
        assert got[i].tolist() == want[i].tolist(), p


def test_tokenizer_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        Tokenizer(tmp_path)
    folder = _hf_tokenizer_files(tmp_path / "tok")
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<nope>"}))
    with pytest.raises(ValueError, match="pad token '<nope>'"):
        Tokenizer(folder)
