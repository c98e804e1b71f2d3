#!/usr/bin/env python
"""Benchmark the teacher's prompt path on CPU: DAPE tagger + SD 2.1 text encoder, Flax vs torch.

Full sizes, random weights, fp32, batch 1: RAM Swin-L 384 + tagging head (4585 classes) on a
128x128 LR image (resized to 384 as AdcSR ``train.py`` does), then the 23-layer CLIP text encoder
on 77 tokens. The torch tagger is the RAM-structured reference of ``tests/models/test_tagger.py``
with its LoRAs merged (loralib after ``eval()``); the torch text encoder is transformers'
``CLIPTextModel``. Both frameworks run in this process, alternating, and the max abs difference
of their outputs is printed. Heavy (about 6 GB): run under the shared lock::

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_prompt.py

Prints one JSON line with seconds per image (median of ``--iters`` after ``--warmup``).
Measured here (2 shared CPU cores under load ~10, 2026-12-02, jax 0.10.2 / torch 2.13.0, fp32,
128x128 LR): tagger 27.7 s (Flax) vs 33.5 s (torch), text encoder 2.41 s vs 9.33 s, prompt
path 30.1 s vs 42.9 s per image = 0.70x torch; text encoder max abs difference 8.3e-6
(``--smoke`` tagger logits 1.5e-6). The tagging head (4585 label queries x 2 BERT layers) is
a large part of the tagger; its label-side projections do not depend on the image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from adcsr_jax import xla_cpu  # noqa: E402

xla_cpu.apply()  # before jax starts: XLA reads XLA_FLAGS once (adcsr_jax/xla_cpu.py)

REPO = Path(__file__).resolve().parents[1]


def _time(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lr", type=int, default=128, help="LR side fed to the tagger")
    parser.add_argument("--smoke", action="store_true", help="small networks: check the script")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    sys.path.insert(0, str(REPO / "tests" / "models"))
    from test_tagger import LoraLinear, MergedLinear, TorchRAM, _torch_logits  # noqa: PLC0415

    from adcsr_jax.models.tagger import RAMTagger, Tagger, TaggerConfig, read_tag_files
    from adcsr_jax.models.text import CLIPTextTransformer, TextConfig, tokenize
    from adcsr_jax.weights.loaders import to_device
    from adcsr_jax.weights.tagger import merge_lora, tagger_params_from_torch
    from adcsr_jax.weights.text_encoder import text_encoder_params_from_torch

    torch.manual_seed(0)
    cfg = TaggerConfig()
    te_sizes = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23)
    if args.smoke:
        cfg = TaggerConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
        te_sizes = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1)
    ram = TorchRAM(cfg).eval()
    state = {k: v.detach().numpy().copy() for k, v in ram.state_dict().items()}  # before merging
    with torch.no_grad():  # loralib merges on eval(): time the merged torch module
        for m in ram.modules():
            if isinstance(m, MergedLinear):
                m.weight += m.delta()
                m.merged = True
            elif isinstance(m, LoraLinear):
                m.weight += m.lora_B @ m.lora_A / m.r
                m.merged = True
    params = to_device(tagger_params_from_torch(merge_lora(state), cfg, source="bench"))
    del state
    tags, thr = read_tag_files()
    tagger = Tagger(RAMTagger(cfg), params, tags, thr)

    te_cfg = transformers.CLIPTextConfig(
        vocab_size=49408, num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
        projection_dim=512, **te_sizes,
    )  # fmt: skip
    text = transformers.CLIPTextModel(te_cfg).eval()
    te_config = TextConfig(**te_sizes)
    te_params = to_device(
        text_encoder_params_from_torch(
            {k: v.numpy() for k, v in text.state_dict().items()}, te_config, source="bench"
        )
    )
    te = CLIPTextTransformer(te_config)
    te_apply = jax.jit(lambda p, ids: te.apply({"params": p}, ids))

    image = np.random.default_rng(0).random((1, args.lr, args.lr, 3), np.float32)
    ids = tokenize(["building, city, night, sky, street, tree, car, person"])
    ids_t = torch.from_numpy(ids.astype(np.int64))

    def jax_tagger():
        return tagger.logits(image).block_until_ready()

    def torch_tagger():
        return _torch_logits(ram, image, True, cfg.image_size)

    def jax_text():
        return te_apply(te_params, jnp.asarray(ids)).block_until_ready()

    def torch_text():
        with torch.no_grad():
            return text(ids_t)[0]

    err_tag = float(np.abs(np.asarray(jax_tagger()) - torch_tagger()).max())
    err_text = float(np.abs(np.asarray(jax_text()) - torch_text().numpy()).max())
    out = {
        "jax_tagger_s": _time(jax_tagger, args.warmup, args.iters),
        "torch_tagger_s": _time(torch_tagger, args.warmup, args.iters),
        "jax_text_s": _time(jax_text, args.warmup, args.iters),
        "torch_text_s": _time(torch_text, args.warmup, args.iters),
        "max_abs_err_logits": err_tag,
        "max_abs_err_text": err_text,
        "lr": args.lr,
        "torch_threads": torch.get_num_threads(),
    }
    out["jax_total_s"] = out["jax_tagger_s"] + out["jax_text_s"]
    out["torch_total_s"] = out["torch_tagger_s"] + out["torch_text_s"]
    out["ratio"] = out["jax_total_s"] / out["torch_total_s"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
