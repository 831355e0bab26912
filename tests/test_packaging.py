"""Package metadata fit for PyPI and the napari hub: license, URLs, classifiers, manifest name.

The pyproject checks read the file (``tomllib``; on Python 3.10 ``tomli`` when installed,
else those checks skip). One test builds the wheel offline and reads its METADATA, which is
what PyPI and the napari hub actually see.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
URL_KEYS = ("Homepage", "Source", "Issues", "Documentation")
HUB_CLASSIFIERS = {
    "Framework :: napari",
    "Development Status :: 3 - Alpha",
    "Intended Audience :: Science/Research",
    "Operating System :: OS Independent",
    "Topic :: Scientific/Engineering :: Image Processing",
    "Topic :: Scientific/Engineering :: Medical Science Apps.",
}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="no TOML parser (tomllib is 3.11+)")
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def test_license_file_is_bsd3() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, napari-histo developers" in text
    assert "Neither the name of the copyright holder" in text  # the third clause


def test_license_is_an_spdx_expression(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    assert project["license"] == "BSD-3-Clause"  # PEP 639: a string, not a table
    assert project["license-files"] == ["LICENSE"]
    # PEP 639: License classifiers are superseded by the expression (setuptools refuses both)
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    setuptools_req = next(r for r in pyproject["build-system"]["requires"]
                          if r.startswith("setuptools"))
    low = re.search(r">=\s*(\d+)", setuptools_req)
    assert low and int(low.group(1)) >= 77, setuptools_req  # first release with PEP 639


def test_project_urls(pyproject: dict[str, Any]) -> None:
    urls = pyproject["project"]["urls"]
    for key in URL_KEYS:
        assert urls.get(key, "").startswith("https://"), key


def test_napari_hub_classifiers(pyproject: dict[str, Any]) -> None:
    classifiers = pyproject["project"]["classifiers"]
    assert len(classifiers) == len(set(classifiers))
    missing = HUB_CLASSIFIERS - set(classifiers)
    assert not missing, missing


def test_python_classifiers_match_requires_python(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    floor = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"].strip())
    assert floor, project["requires-python"]
    minors = sorted(int(m.group(1)) for c in project["classifiers"]
                    if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c)))
    assert minors and minors[0] == int(floor.group(1))  # none below, the floor listed
    assert minors == list(range(minors[0], minors[-1] + 1))  # no gaps


def test_manifest_name_matches_entry_point(pyproject: dict[str, Any]) -> None:
    manifest = yaml.safe_load((REPO / "napari.yaml").read_text(encoding="utf-8"))
    entry = pyproject["project"]["entry-points"]["napari.manifest"]
    assert list(entry) == [manifest["name"]]
    assert entry[manifest["name"]] == "napari_histo:napari.yaml"
    assert manifest["name"] == pyproject["project"]["name"]
    assert "napari.yaml" in pyproject["tool"]["setuptools"]["package-data"]["napari_histo"]


def test_wheel_metadata(tmp_path: Path) -> None:
    """The built wheel's METADATA carries the license expression, URLs and classifiers."""
    from importlib.metadata import version

    if int(version("setuptools").split(".")[0]) < 77:
        pytest.skip("this environment's setuptools predates PEP 639 (the build needs >= 77)")
    src = tmp_path / "src_copy"  # build a copy: no build/ or egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "napari.yaml", "LICENSE"):
        shutil.copy2(REPO / name, src / name, follow_symlinks=True)
    shutil.copytree(REPO / "src", src / "src", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    out = tmp_path / "wheel"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = out.glob("napari_histo-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = zf.read(meta_name).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    lines = set(meta.splitlines())
    assert "License-Expression: BSD-3-Clause" in lines
    assert "License-File: LICENSE" in lines
    assert not any(ln.startswith("License:") for ln in lines)  # the deprecated field
    for key in URL_KEYS:
        assert any(ln.startswith(f"Project-URL: {key}, https://") for ln in lines), key
    for c in HUB_CLASSIFIERS:
        assert f"Classifier: {c}" in lines
