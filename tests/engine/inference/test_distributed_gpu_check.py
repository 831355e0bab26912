"""benchmarks/gpu_check.py does not rot: its --cpu-smoke run takes the same code paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"),
                          "--cpu-smoke", "--workdir", str(tmp_path), "--budget-s", "240"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    for check in ("train amp+channels_last", "train / model-only steps",
                  "infer CAMELYON-size slide", "infer / model-only"):
        assert any(line.startswith(check) for line in lines), res.stdout
    assert lines[-1].split() == ["summary", "all", "checks", "passed"]
