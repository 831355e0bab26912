"""The npe2 manifest: valid, importable, and shipped unchanged in the wheel.

The top-level ``napari.yaml`` is the one source of the manifest; ``src/napari_histo/napari.yaml``
is a symlink to it. These tests prove that ``npe2 validate napari-histo`` passes for the
editable install and for an installed wheel, whose copy must equal the top-level file.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "napari.yaml"
BIN = Path(sys.executable).parent


def _npe2() -> list[str]:
    exe = BIN / "npe2"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "npe2"]


def test_manifest_symlink_points_at_top_level_file() -> None:
    pkg_manifest = REPO / "src" / "napari_histo" / "napari.yaml"
    assert pkg_manifest.exists()
    assert pkg_manifest.resolve() == MANIFEST.resolve()


def test_npe2_validate_editable_install() -> None:
    res = subprocess.run(
        [*_npe2(), "validate", "napari-histo"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in (res.stdout + res.stderr).lower()


def test_manifest_python_names_import() -> None:
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    assert pm.name == "napari-histo"
    assert pm.contributions.commands
    for cmd in pm.contributions.commands:
        assert cmd.python_name, cmd.id
        module, _, attr = cmd.python_name.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), cmd.python_name
    readers = pm.contributions.readers or []
    writers = pm.contributions.writers or []
    samples = pm.contributions.sample_data or []
    assert readers and writers and samples
    exts = {e for w in writers for e in w.filename_extensions}
    assert {".ome.zarr", ".zarr", ".ome.tif", ".geojson"} <= exts


def test_manifest_is_installed_package_data() -> None:
    """npe2 finds the manifest through the ``napari.manifest`` entry point."""
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-histo")
    assert pm.name == "napari-histo"
    assert pm == PluginManifest.from_file(MANIFEST)


@pytest.mark.slow
def test_wheel_ships_manifest_and_validates(tmp_path: Path) -> None:
    """Build the wheel offline, check its napari.yaml and run npe2 validate on it."""
    # Build from a copy (symlinks kept) so the checkout gets no build/ or egg-info and two
    # test runs cannot race on them.
    src = tmp_path / "src_copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "napari.yaml", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name, follow_symlinks=True)
    shutil.copytree(
        REPO / "src",
        src / "src",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    wheel_dir = tmp_path / "wheel"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(wheel_dir), str(src)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    wheels = list(wheel_dir.glob("napari_histo-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        assert "napari_histo/napari.yaml" in names
        assert zf.read("napari_histo/napari.yaml") == MANIFEST.read_bytes()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ep = zf.read(entry_points).decode()
        assert "[napari.manifest]" in ep
        assert "napari-histo = napari_histo:napari.yaml" in ep

    target = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheels[0])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    installed = target / "napari_histo" / "napari.yaml"
    assert installed.is_file() and not installed.is_symlink()

    # A clean interpreter that sees only the wheel's copy of napari_histo (the editable
    # install's finder is bypassed: -S skips site, PYTHONPATH puts the target first).
    code = (
        "import sys, importlib.metadata as md\n"
        "from npe2 import PluginManifest\n"
        "import napari_histo\n"
        f"assert napari_histo.__file__.startswith({str(target)!r}), napari_histo.__file__\n"
        "dist = md.distribution('napari-histo')\n"
        f"assert str(dist.locate_file('')).startswith({str(target)!r}), dist.locate_file('')\n"
        "pm = PluginManifest.from_distribution('napari-histo')\n"
        "pm.validate_imports()\n"
        "print('wheel-manifest-ok', pm.name, len(pm.contributions.commands))\n"
    )
    env = dict(os.environ)
    site = [p for p in sys.path if p.endswith("site-packages")]
    env["PYTHONPATH"] = os.pathsep.join([str(target), *site])
    res = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wheel-manifest-ok napari-histo" in res.stdout

    # and the npe2 CLI itself, by distribution name, seeing only the wheel install
    res = subprocess.run(
        [sys.executable, "-S", "-m", "npe2", "validate", "napari-histo", "--imports"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in (res.stdout + res.stderr).lower()


@pytest.mark.parametrize("key", ["readers", "writers", "sample_data"])
def test_manifest_contribution_commands_exist(key: str) -> None:
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    ids = {c.id for c in pm.contributions.commands or []}
    for contrib in getattr(pm.contributions, key) or []:
        assert contrib.command in ids
