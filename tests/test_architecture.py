"""The one-way architecture holds: engine, io and cli run without Qt or napari."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("napari_histo.io.slide", ["torch", "napari", "qtpy", "magicgui"]),
        ("napari_histo.cli", ["torch", "napari", "qtpy", "magicgui"]),
        ("napari_histo.engine", ["napari", "qtpy", "magicgui", "PyQt6"]),
    ],
)
def test_layer_imports_stay_headless(module: str, forbidden: list[str]) -> None:
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imported {out.stdout.strip()}"


def test_import_contracts_hold() -> None:
    """import-linter contracts from pyproject.toml (layers and forbidden GUI/torch imports)."""
    from importlinter.cli import lint_imports

    assert lint_imports() == 0


def test_package_init_is_cheap() -> None:
    code = "import sys, napari_histo; print(len([m for m in sys.modules if m.startswith('napari_histo')]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
