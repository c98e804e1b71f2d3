"""Plain-torch LPIPS v0.1 and DISTS forwards (richzhang/PerceptualSimilarity, dingkeyan93/DISTS),
written out with torch.nn.functional so they run without torchvision. Shared by the parity tests
and scripts/bench_eval.py."""

from __future__ import annotations

import numpy as np
import torch

F = torch.nn.functional

ALEX = (
    (3, 64, 11, 4, 2),
    (64, 192, 5, 1, 2),
    (192, 384, 3, 1, 1),
    (384, 256, 3, 1, 1),
    (256, 256, 3, 1, 1),
)
VGG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def random_params(net: str, seed: int = 0, dists: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {}
    if net == "alex":
        shapes = [(k, k, cin, cout) for cin, cout, k, _, _ in ALEX]
    else:
        widths = [w for w in VGG if w != "M"]
        shapes = [(3, 3, cin, cout) for cin, cout in zip([3, *widths[:-1]], widths)]
    for i, shape in enumerate(shapes):
        fan_in = shape[0] * shape[1] * shape[2]
        params[f"conv{i}_kernel"] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        params[f"conv{i}_bias"] = rng.normal(0, 0.01, shape[-1]).astype(np.float32)
    taps = [s[-1] for s in shapes] if net == "alex" else [64, 128, 256, 512, 512]
    for i, c in enumerate(taps):
        params[f"lin{i}"] = rng.uniform(0, 0.1, c).astype(np.float32)
    if dists:
        params["alpha"] = rng.normal(0.1, 0.01, 1475).astype(np.float32)
        params["beta"] = rng.normal(0.1, 0.01, 1475).astype(np.float32)
    return params


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _conv(params, i, x, stride=1, pad=1):
    w = _t(params[f"conv{i}_kernel"]).permute(3, 2, 0, 1)
    return F.relu(F.conv2d(x, w, _t(params[f"conv{i}_bias"]), stride=stride, padding=pad))


def _torch_alex(params, x):
    taps = []
    for i, (_, _, _, stride, pad) in enumerate(ALEX):
        if i in (1, 2):
            x = F.max_pool2d(x, 3, 2)
        x = _conv(params, i, x, stride, pad)
        taps.append(x)
    return taps


def _torch_l2pool(x):
    a = np.hanning(5)[1:-1]
    g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
    g = (g / g.sum())[None, None].repeat(x.shape[1], 1, 1, 1)
    return (F.conv2d(x**2, g, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


def _torch_vgg(params, x, l2pool=False):
    taps, conv = [], 0
    for w in VGG:
        if w == "M":
            x = _torch_l2pool(x) if l2pool else F.max_pool2d(x, 2, 2)
            continue
        x = _conv(params, conv, x)
        if conv in (1, 3, 6, 9, 12):
            taps.append(x)
        conv += 1
    return taps


def _nchw(a: np.ndarray, contiguous: bool) -> torch.Tensor:
    """NHWC images as an NCHW tensor: a channels-last view of the array, or with ``contiguous``
    NCHW memory (what ``to_tensor`` gives lpips and pyiqa users; oneDNN runs the two at
    different speeds, see ``scripts/bench_eval.py``)."""
    x = _t(a).permute(0, 3, 1, 2)
    return x.contiguous() if contiguous else x


def torch_lpips(params, sr, hr, net, contiguous=False):
    """richzhang/PerceptualSimilarity v0.1 forward, written out in torch."""
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    x0, x1 = (_nchw(a, contiguous) * 2 - 1 for a in (sr, hr))
    backbone = _torch_alex if net == "alex" else _torch_vgg
    f0, f1 = backbone(params, (x0 - shift) / scale), backbone(params, (x1 - shift) / scale)
    total = 0
    for i, (a, b) in enumerate(zip(f0, f1)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        lin = _t(params[f"lin{i}"]).view(1, -1, 1, 1)
        total = total + F.conv2d((a - b) ** 2, lin).mean([2, 3])
    return total.reshape(-1).numpy()


def torch_dists(params, sr, hr, contiguous=False):
    """dingkeyan93/DISTS forward, written out in torch (``contiguous``: see :func:`_nchw`)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1)
    x, y = (_nchw(a, contiguous) for a in (sr, hr))
    f0 = [x, *_torch_vgg(params, (x - mean) / std, l2pool=True)]
    f1 = [y, *_torch_vgg(params, (y - mean) / std, l2pool=True)]
    chns = [3, 64, 128, 256, 512, 512]
    alpha, beta = _t(params["alpha"]).view(1, -1, 1, 1), _t(params["beta"]).view(1, -1, 1, 1)
    w_sum = alpha.sum() + beta.sum()
    alpha, beta = torch.split(alpha / w_sum, chns, 1), torch.split(beta / w_sum, chns, 1)
    d1 = d2 = 0
    for k in range(6):
        xm, ym = f0[k].mean([2, 3], keepdim=True), f1[k].mean([2, 3], keepdim=True)
        s1 = (2 * xm * ym + 1e-6) / (xm**2 + ym**2 + 1e-6)
        d1 = d1 + (alpha[k] * s1).sum(1, keepdim=True)
        xv = ((f0[k] - xm) ** 2).mean([2, 3], keepdim=True)
        yv = ((f1[k] - ym) ** 2).mean([2, 3], keepdim=True)
        cov = (f0[k] * f1[k]).mean([2, 3], keepdim=True) - xm * ym
        s2 = (2 * cov + 1e-6) / (xv + yv + 1e-6)
        d2 = d2 + (beta[k] * s2).sum(1, keepdim=True)
    return (1 - (d1 + d2)).reshape(-1).numpy()
