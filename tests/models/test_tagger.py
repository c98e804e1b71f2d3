"""DAPE / RAM tagger against a torch module with RAM's structure (tiny sizes, random weights).

The torch reference follows ``ram/models/ram_lora.py``, ``swin_transformer_lora.py`` and
``bert_lora.py`` of cswry/OSEDiff (= Guaishou74851/AdcSR): Swin with loralib's ``MergedLinear``
qkv (r 8, q and v), the BERT tagging layers with ``lora.Linear`` query/key, evaluated with the
LoRAs *unmerged* (loralib's forward), so the loader's merge is checked too. timm and loralib are
not installed, so the pieces are written here.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

from adcsr_jax.models.tagger import TaggerConfig, bilinear_matrix  # noqa: E402
from adcsr_jax.weights import CheckpointMismatchError, CheckpointReadError, load_tagger  # noqa: E402

TINY = TaggerConfig(
    image_size=64,
    patch_size=4,
    embed_dim=8,
    depths=(2, 2, 2),
    num_heads=(2, 2, 4),
    window_size=4,
    embed_width=16,
    head_hidden=24,
    head_heads=4,
    head_layers=2,
    head_intermediate=32,
    num_classes=10,
)
R = 8  # loralib r of RAM's LoRAs


# --- torch reference (RAM's code, small) ------------------------------------------------------


class LoraLinear(nn.Linear):
    """loralib ``Linear`` (alpha 1): ``x W^T + b + x A^T B^T / r``."""

    def __init__(self, i: int, o: int, r: int = R) -> None:
        super().__init__(i, o)
        self.lora_A = nn.Parameter(torch.randn(r, i) * 0.3)
        self.lora_B = nn.Parameter(torch.randn(o, r) * 0.3)
        self.r, self.merged = r, False

    def forward(self, x):
        if self.merged:  # loralib after eval(): the delta folded into the weight
            return super().forward(x)
        return super().forward(x) + (x @ self.lora_A.T @ self.lora_B.T) / self.r


class MergedLinear(nn.Linear):
    """loralib ``MergedLinear(dim, 3 dim, r=8, enable_lora=[True, False, True])`` (alpha 1)."""

    def __init__(self, dim: int, r: int = R) -> None:
        super().__init__(dim, 3 * dim)
        self.lora_A = nn.Parameter(torch.randn(2 * r, dim) * 0.3)
        self.lora_B = nn.Parameter(torch.randn(2 * dim, r) * 0.3)
        self.r, self.merged = r, False
        ind = torch.zeros(3 * dim, dtype=torch.bool).view(3, -1)
        ind[[True, False, True], :] = True
        self.lora_ind = ind.view(-1)

    def delta(self):
        d = F.conv1d(self.lora_A.unsqueeze(0), self.lora_B.unsqueeze(-1), groups=2).squeeze(0)
        full = d.new_zeros((3 * self.in_features, self.in_features))
        full[self.lora_ind] = d
        return full / self.r

    def forward(self, x):
        if self.merged:
            return super().forward(x)
        return super().forward(x) + x @ self.delta().T


def window_partition(x, ws):
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows, ws, h, w):
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


class WindowAttention(nn.Module):
    def __init__(self, dim, ws, heads):
        super().__init__()
        self.ws, self.heads, self.scale = ws, heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))
        flat = torch.flatten(coords, 1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += ws - 1
        rel[:, :, 1] += ws - 1
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.qkv = MergedLinear(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim, res, heads, ws, shift):
        super().__init__()
        if res <= ws:
            shift, ws = 0, res
        self.res, self.ws, self.shift = res, ws, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, heads)
        self.mlp = Mlp(dim, 4 * dim)
        mask = None
        if shift:
            img = torch.zeros((1, res, res, 1))
            cnt = 0
            for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                    img[:, h, w, :] = cnt
                    cnt += 1
            mw = window_partition(img, ws).view(-1, ws * ws)
            mask = mw.unsqueeze(1) - mw.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        self.register_buffer("attn_mask", mask)

    def forward(self, x):
        b, length, c = x.shape
        short = x
        x = self.norm1(x).view(b, self.res, self.res, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        w = window_partition(x, self.ws).view(-1, self.ws * self.ws, c)
        w = self.attn(w, mask=self.attn_mask).view(-1, self.ws, self.ws, c)
        x = window_reverse(w, self.ws, self.res, self.res)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = short + x.reshape(b, length, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, res, dim):
        super().__init__()
        self.res = res
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        b, _, c = x.shape
        x = x.view(b, self.res, self.res, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class Stage(nn.Module):
    def __init__(self, dim, res, depth, heads, ws, last):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, res, heads, ws, 0 if i % 2 == 0 else ws // 2) for i in range(depth)
        )
        self.downsample = None if last else PatchMerging(res, dim)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, p, dim):
        super().__init__()
        self.proj, self.norm = nn.Conv2d(3, dim, p, p), nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Swin(nn.Module):
    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        res = cfg.image_size // cfg.patch_size
        n = len(cfg.depths)
        self.layers = nn.ModuleList(
            Stage(cfg.embed_dim * 2**i, res // 2**i, cfg.depths[i], cfg.num_heads[i],
                  cfg.window_size, i == n - 1)
            for i in range(n)
        )  # fmt: skip
        self.norm = nn.LayerNorm(cfg.vision_width)

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        cls = F.adaptive_avg_pool1d(x.transpose(1, 2), 1)
        return torch.cat([cls.transpose(1, 2), x], dim=1)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, width, heads):
        super().__init__()
        self.heads, self.hd = heads, hidden // heads
        self.query = LoraLinear(hidden, hidden)
        self.key = LoraLinear(width, hidden)
        self.value = nn.Linear(width, hidden)

    def split(self, x):
        return x.view(*x.shape[:-1], self.heads, self.hd).permute(0, 2, 1, 3)

    def forward(self, x, ctx, mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(ctx)), self.split(self.value(ctx))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.hd) + mask
        out = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).contiguous()
        return out.view(*out.shape[:-2], -1)


class DenseLN(nn.Module):
    def __init__(self, i, o, eps):
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(i, o), nn.LayerNorm(o, eps=eps)

    def forward(self, h, res):
        return self.LayerNorm(self.dense(h) + res)


class CrossAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = BertSelfAttention(cfg.head_hidden, cfg.embed_width, cfg.head_heads)
        self.output = DenseLN(cfg.head_hidden, cfg.head_hidden, cfg.head_eps)

    def forward(self, x, ctx, mask):
        return self.output(self.self(x, ctx, mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.head_hidden, cfg.head_intermediate)

    def forward(self, x):
        return F.gelu(self.dense(x))


class TaggingLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.crossattention = CrossAttention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseLN(cfg.head_intermediate, cfg.head_hidden, cfg.head_eps)

    def forward(self, x, ctx, mask):
        a = self.crossattention(x, ctx, mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList(TaggingLayer(cfg) for _ in range(cfg.head_layers))


class TaggingHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)

    def forward(self, x, ctx):
        # BertModel's invert_attention_mask of an all-ones image mask: (1 - 1) * -10000 = 0
        mask = torch.zeros(ctx.shape[0], 1, 1, ctx.shape[1])
        for layer in self.encoder.layer:
            x = layer(x, ctx, mask)
        return x


class TorchRAM(nn.Module):
    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        self.visual_encoder = Swin(cfg)
        self.tagging_head = TaggingHead(cfg)
        self.label_embed = nn.Parameter(torch.randn(cfg.num_classes, cfg.embed_width))
        self.wordvec_proj = nn.Linear(cfg.embed_width, cfg.head_hidden)
        self.fc = nn.Linear(cfg.head_hidden, 1)
        self.image_proj = nn.Linear(cfg.vision_width, cfg.embed_width)

    def forward(self, image):  # RAMLora.generate_tag up to the logits
        label = F.relu(self.wordvec_proj(self.label_embed))
        emb = self.image_proj(self.visual_encoder(image))
        label = label.unsqueeze(0).repeat(emb.shape[0], 1, 1)
        return self.fc(self.tagging_head(label, emb)).squeeze(-1)


def _reference(seed: int = 0, cfg: TaggerConfig = TINY) -> TorchRAM:
    torch.manual_seed(seed)
    model = TorchRAM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _write_checkpoints(model: TorchRAM, folder: Path) -> tuple[Path, Path]:
    """RAM's file (``{'model': ...}``, no LoRA, ``vision_multi`` names, tied ``tag_encoder``
    copies, extra text-decoder keys and buffers) and a DAPE file (LoRAs + one replaced tensor)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lora = {k: v for k, v in sd.items() if ".lora_" in k}
    base = {k: v for k, v in sd.items() if ".lora_" not in k}
    dape_fc = base["fc.weight"].clone()
    base["fc.weight"] = torch.randn_like(dape_fc)  # RAM's own value, replaced by DAPE's
    ram = {}
    for k, v in base.items():
        ram[k.replace("tagging_head", "vision_multi")] = v
        if k.startswith("tagging_head.encoder.layer."):
            ram[k.replace("tagging_head", "tag_encoder")] = v
    ram["text_decoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(5, 3)
    ram["tag_encoder.encoder.layer.5.attention.self.query.weight"] = torch.zeros(3, 3)
    ram_path, dape_path = folder / "ram_swin_large_14m.pth", folder / "DAPE.pth"
    torch.save({"model": ram, "epoch": 3}, ram_path)
    torch.save({**lora, "fc.weight": dape_fc}, dape_path)
    return ram_path, dape_path


def _tag_files(folder: Path, thresholds: np.ndarray) -> tuple[Path, Path]:
    tags = folder / "tags.txt"
    tags.write_text("\n".join(f"tag {i}" for i in range(TINY.num_classes)), encoding="utf-8")
    thr = folder / "thr.txt"
    thr.write_text("\n".join(f"{t:.6f}" for t in thresholds) + "\n")
    return tags, thr


def _torch_logits(
    model: TorchRAM, images: np.ndarray, antialias: bool, size: int = TINY.image_size
) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    s = size
    x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=antialias)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std).numpy()


def test_tagger_logits_and_tags_match_torch_reference(tmp_path: Path) -> None:
    """Upsampled, downsampled (with and without antialiasing) and exact-size inputs."""
    model = _reference()
    ram_path, dape_path = _write_checkpoints(model, tmp_path)
    rng = np.random.default_rng(1)
    cases = [((2, 40, 48, 3), True), ((2, 80, 96, 3), True), ((2, 80, 96, 3), False)]
    cases.append(((2, 64, 64, 3), True))
    images = [rng.random(shape, np.float32) for shape, _ in cases]
    want = [_torch_logits(model, x, aa) for x, (_, aa) in zip(images, cases, strict=True)]
    thr = np.median(1 / (1 + np.exp(-np.concatenate(want))), axis=0).astype(np.float32)
    tags_file, thr_file = _tag_files(tmp_path, thr)
    tagger = load_tagger(
        ram_path, dape_path, config=TINY, tag_list=tags_file, thresholds=thr_file,
        delete_tag_index=[3],
    )  # fmt: skip
    assert tagger.antialias
    thr_read = np.array([float(f"{t:.6f}") for t in thr], np.float32)  # as written and read back
    any_tag = False
    for x, w, (_, aa) in zip(images, want, cases, strict=True):
        t = dataclasses.replace(tagger, antialias=aa)
        got = np.asarray(t.logits(x))
        assert got.shape == w.shape == (2, TINY.num_classes)
        assert np.abs(got - w).max() < 1e-4, np.abs(got - w).max()
        hits = 1 / (1 + np.exp(-w)) > thr_read  # sigmoid > per-class threshold, tag 3 deleted
        hits[:, 3] = False
        expect = [", ".join(f"tag {i}" for i in np.flatnonzero(h)) for h in hits]
        assert t.tags(x) == expect
        any_tag |= any(expect)
    assert any_tag


def test_tagger_without_dape_is_plain_ram(tmp_path: Path) -> None:
    model = _reference(seed=2)
    ram_path, _ = _write_checkpoints(model, tmp_path)
    with torch.no_grad():  # RAM alone: no LoRA, RAM's own fc
        for m in model.modules():
            if hasattr(m, "lora_B"):
                m.lora_B.zero_()
        model.fc.weight.copy_(torch.load(ram_path)["model"]["fc.weight"])
    tags_file, thr_file = _tag_files(tmp_path, np.full(TINY.num_classes, 0.5))
    tagger = load_tagger(ram_path, config=TINY, tag_list=tags_file, thresholds=thr_file)
    images = np.random.default_rng(3).random((2, 64, 64, 3), np.float32)  # compiled above
    want = _torch_logits(model, images, True)
    assert np.abs(np.asarray(tagger.logits(images)) - want).max() < 1e-4


def test_bilinear_matrix_matches_torch() -> None:
    for n_in, n_out in [(128, 384), (512, 384), (37, 12), (12, 37), (384, 384)]:
        for aa in (True, False):
            x = torch.eye(n_in).view(1, 1, n_in, n_in)
            ref = F.interpolate(
                x, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=aa
            )
            np.testing.assert_allclose(
                bilinear_matrix(n_in, n_out, aa), ref[0, 0].numpy(), atol=1e-5
            )


def test_tagger_errors_name_files_and_keys(tmp_path: Path) -> None:
    model = _reference()
    ram_path, dape_path = _write_checkpoints(model, tmp_path)
    tags_file, thr_file = _tag_files(tmp_path, np.full(TINY.num_classes, 0.5))
    kw = dict(config=TINY, tag_list=tags_file, thresholds=thr_file)
    with pytest.raises(CheckpointReadError, match="nothere.pth"):
        load_tagger(tmp_path / "nothere.pth", dape_path, **kw)
    ram = torch.load(ram_path)["model"]
    del ram["visual_encoder.layers.1.blocks.0.attn.proj.bias"]
    ram["image_proj.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad_ram.pth"
    torch.save({"model": ram}, bad)
    with pytest.raises(CheckpointMismatchError) as e:
        load_tagger(bad, dape_path, **kw)
    msg = str(e.value)
    assert "bad_ram.pth" in msg and "DAPE.pth" in msg
    assert "visual_encoder.layers.1.blocks.0.attn.proj.bias" in msg
    assert "image_proj.weight: (3, 3) vs (16, 32)" in msg
    foreign = tmp_path / "foreign.pth"
    torch.save({"unet.conv_in.weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointMismatchError, match="foreign.pth"):
        load_tagger(ram_path, foreign, **kw)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_tagger(ram_path, dape_path, config=TINY, tag_list=tmp_path / "missing.txt")
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    with pytest.raises(ValueError, match="thr.txt has 10 thresholds for 2 tags"):
        load_tagger(ram_path, dape_path, config=TINY, tag_list=short, thresholds=thr_file)
    short_thr = tmp_path / "short_thr.txt"
    short_thr.write_text("0.5\n0.5\n")
    with pytest.raises(ValueError, match="short.txt has 2 tags.*10 classes"):
        load_tagger(ram_path, dape_path, config=TINY, tag_list=short, thresholds=short_thr)


def test_vendored_tag_files() -> None:
    from adcsr_jax.models.tagger import read_tag_files

    tags, thr = read_tag_files()
    assert len(tags) == 4585 == thr.shape[0]
    assert tags[:2] == ("3D CG rendering", "3D glasses")
    assert thr.min() >= 0.45 and thr.max() <= 1.0


def test_config_read_from_checkpoint_and_cli(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from adcsr_jax.cli import main
    from adcsr_jax.weights.tagger import config_from_state, read_ram_state_dict

    model = _reference()
    ram_path, dape_path = _write_checkpoints(model, tmp_path)
    assert config_from_state(read_ram_state_dict(ram_path)) == TINY
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(5)
    arrays = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(photos / f"im{i}.png")
    (photos / "broken.png").write_bytes(b"not a png")
    want = _torch_logits(model, np.stack(arrays).astype(np.float32) / 255, True)
    tags_file, thr_file = _tag_files(tmp_path, np.median(1 / (1 + np.exp(-want)), axis=0))
    argv = ["tags", "--ram", str(ram_path), "--dape", str(dape_path), "--input", str(photos)]
    argv += ["--tag-list", str(tags_file), "--thresholds", str(thr_file), "--prompt", ""]
    assert main(argv) == 1  # the broken file is reported and skipped
    out = capsys.readouterr()
    thr = np.loadtxt(thr_file, dtype=np.float32)
    hits = 1 / (1 + np.exp(-want)) > thr
    lines = [
        f"im{i}.png\t" + ", ".join(f"tag {j}" for j in np.flatnonzero(h)) + ", ,"
        for i, h in enumerate(hits)
    ]
    assert out.out.splitlines() == lines
    assert "broken.png" in out.err
    assert main(["tags", "--ram", str(tmp_path / "no.pth"), "--input", str(photos)]) == 2
    assert "no.pth" in capsys.readouterr().err


def test_prompt_embeddings_match_torch(tmp_path: Path) -> None:
    """Tags of the images -> SD tokens -> CLIP text encoder, against torch end to end."""
    transformers = pytest.importorskip("transformers")
    import jax

    from adcsr_jax.models.tagger import TagTokens, prompt_embeddings, prompt_embeddings_on_device
    from adcsr_jax.models.text import get_tokenizer, tokenize
    from adcsr_jax.weights import load_text_encoder, write_safetensors

    model = _reference()
    ram_path, dape_path = _write_checkpoints(model, tmp_path)
    images = np.random.default_rng(7).random((2, 32, 32, 3), np.float32)  # a 128 LR, scaled
    logits = _torch_logits(model, images, True)
    tags_file, thr_file = _tag_files(tmp_path, np.median(1 / (1 + np.exp(-logits)), axis=0))
    tagger = load_tagger(ram_path, dape_path, tag_list=tags_file, thresholds=thr_file)
    torch.manual_seed(0)
    cfg = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, hidden_act="gelu",
    )  # fmt: skip
    text = transformers.CLIPTextModel(cfg).eval()
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    (folder / "config.json").write_text(cfg.to_json_string())
    write_safetensors(
        folder / "model.safetensors", {k: v.numpy() for k, v in text.state_dict().items()}
    )
    encoder = load_text_encoder(folder)
    thr = np.loadtxt(thr_file, dtype=np.float32)
    tags = [
        ", ".join(f"tag {j}" for j in np.flatnonzero(h)) for h in 1 / (1 + np.exp(-logits)) > thr
    ]
    for user_prompt, texts in [(None, tags), ("", [f"{t}, ," for t in tags])]:
        got = np.asarray(prompt_embeddings(tagger, encoder, images, user_prompt=user_prompt))
        if user_prompt is not None:  # one compile of the whole on-device path is enough here
            tag_tokens = TagTokens.build(tagger.tag_list, get_tokenizer(), user_prompt)
            step = jax.jit(
                lambda x, tt=tag_tokens: prompt_embeddings_on_device(tagger, tt, encoder, x)
            )
            np.testing.assert_allclose(np.asarray(step(images)), got, atol=1e-5)
        with torch.no_grad():
            want = text(torch.from_numpy(tokenize(texts).astype(np.int64)))[0].numpy()
        assert got.shape == (2, 77, 32)
        assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("user_prompt", [None, "", "clean, high-resolution"])
def test_tag_tokens_on_device_equal_host_tokenizer(user_prompt) -> None:
    """RAM's 4585 tags: ids built on the device == tokenize(', '.join(tags) [+ suffix])."""
    import jax

    from adcsr_jax.models.tagger import TagTokens, osediff_prompt, read_tag_files
    from adcsr_jax.models.text import get_tokenizer, tokenize

    tags, _ = read_tag_files()
    tt = TagTokens.build(tags, get_tokenizer(), user_prompt)
    rng = np.random.default_rng(0)
    hits = np.zeros((6, len(tags)), bool)
    hits[1, [0, 17, 4584]] = True
    hits[2, rng.choice(len(tags), 8, replace=False)] = True
    hits[3, rng.choice(len(tags), 40, replace=False)] = True  # > 75 tokens: truncated
    hits[4] = True
    hits[5, [len(tags) - 1]] = True
    got = np.asarray(jax.jit(tt.ids)(hits))
    texts = [", ".join(tags[i] for i in np.flatnonzero(h)) for h in hits]
    if user_prompt is not None:
        texts = [osediff_prompt(t, user_prompt) for t in texts]
    np.testing.assert_array_equal(got, tokenize(texts))


@pytest.mark.slow
def test_full_size_ram_swin_l_with_dape_matches_torch(tmp_path: Path) -> None:
    """RAM's real sizes (Swin-L 384, window 12, 4585 classes, the vendored tag files): the
    config read from the checkpoint, logits within 1e-3 of torch's (random weights)."""
    cfg = TaggerConfig()
    model = _reference(seed=4, cfg=cfg)
    ram_path, dape_path = _write_checkpoints(model, tmp_path)
    images = np.random.default_rng(5).random((1, 96, 128, 3), np.float32)  # an LR, upsampled
    want = _torch_logits(model, images, True, size=cfg.image_size)
    del model
    tagger = load_tagger(ram_path, dape_path)
    assert tagger.module.config == cfg and len(tagger.tag_list) == cfg.num_classes
    got = np.asarray(tagger.logits(images))
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() < 1e-3 * scale, (np.abs(got - want).max(), scale)
    assert len(tagger.tags(images)) == 1


def test_tag_files_of_a_wheel_install_are_found(tmp_path: Path, monkeypatch) -> None:
    """No checkout beside the package: the copy under <sys.prefix>/share/adcsr_jax/ram."""
    import sys

    from adcsr_jax.models import tagger as tagger_mod

    share = tmp_path / "share" / "adcsr_jax" / "ram"
    share.mkdir(parents=True)
    monkeypatch.delenv(tagger_mod.TAG_DIR_ENV, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    fake_pkg = tmp_path / "site" / "adcsr_jax" / "models" / "tagger.py"
    monkeypatch.setattr(tagger_mod, "__file__", str(fake_pkg))
    assert tagger_mod.default_tag_dir() == share
    monkeypatch.setenv(tagger_mod.TAG_DIR_ENV, str(tmp_path))
    assert tagger_mod.default_tag_dir() == tmp_path
