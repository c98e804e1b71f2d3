"""The core install's smoke test (``scripts/smoke_core.py``, run by ``.ci/run`` in a core-only
venv) passes here with the extras made unimportable, so it cannot rot between CI runs."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_smoke_without_extras() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "smoke_core.py"), "--block-extras"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    assert "0 failure(s)" in out.stdout
