"""Shared pytest setup: 8 host devices for sharding tests, fp32 matmuls, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from adcsr_jax import xla_cpu  # noqa: E402  (imports no jax)

xla_cpu.apply()  # the tests run the XLA:CPU configuration the ``adcsr`` command runs

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip on a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present (only beside the project's own checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def realsr(shared_data: Path) -> Path:
    """The 100 RealSR pairs with OSEDiff's outputs and pyiqa's log."""
    path = shared_data / "realsr"
    if not (path / "test_LR").is_dir():
        pytest.skip(f"{path} has no test_LR/")
    return path
