"""Fixtures of the engine tests that run training in subprocesses."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> Path:
    """A persistent XLA cache shared with the subprocesses (same programs compile once)."""
    path = tmp_path_factory.mktemp("xla_cache")
    from jax._src import compilation_cache  # noqa: PLC0415

    old = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()
    yield path
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    compilation_cache.reset_cache()
