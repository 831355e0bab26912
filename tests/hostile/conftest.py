"""Fixtures of the hostile-input suite; the runner (harness.py) and the input builders
(cases.py) are imported here once and shared with the test modules through ``sys.modules``
as ``napari_histo_hostile_harness`` / ``napari_histo_hostile_cases`` (tests are imported in
importlib mode, so sibling modules are not importable by name)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest


def load_local(name: str) -> Any:
    """Import a helper module of this folder (tests are imported in importlib mode)."""
    key = f"napari_histo_hostile_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


load_local("harness")
load_local("cases")


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Valid inputs (slide, mask, checkpoints, prediction store, training folder), once."""
    return load_local("harness").build_assets(tmp_path_factory.mktemp("hostile-assets"))
