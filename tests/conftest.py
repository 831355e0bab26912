"""Session-wide test setup: headless Qt, and the real data in ../shared/data.

Tests that need the shared data use the ``shared_data`` fixture: it skips when the folder is
missing on a developer machine, and fails when ``CI=true`` (CI must never silently skip them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Must be set before Qt is imported; tests run under xvfb-run (napari needs an X server for
# OpenGL even offscreen).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NAPARI_HISTO_TEST", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NAPARI_HISTO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; fail under CI when it is missing, skip otherwise."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"shared test data missing at {SHARED_DATA} (required when CI=true)")
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA
