"""atomic_path: outputs appear only when complete; failures leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_histo.core.errors import ConfigError, OutputExistsError
from napari_histo.io._atomic import atomic_path, remove_stale_partials


def test_file_appears_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "model.pt"  # parent folders are created
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".model.pt.partial-")
        tmp.write_text("half")
        assert not out.exists()
    assert out.read_text() == "half"
    assert [p.name for p in out.parent.iterdir()] == ["model.pt"]


def test_exception_removes_partial_file_and_dir(tmp_path: Path) -> None:
    for make in (lambda p: p.write_text("x"), lambda p: (p.mkdir(), (p / "0").write_text("c"))):
        with pytest.raises(KeyboardInterrupt):
            with atomic_path(tmp_path / "out.zarr") as tmp:
                make(tmp)
                raise KeyboardInterrupt  # even BaseException (Ctrl-C, generator close)
        assert list(tmp_path.iterdir()) == []


def test_existing_target(tmp_path: Path) -> None:
    out = tmp_path / "a.ome.zarr"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(OutputExistsError, match="overwrite"):
        with atomic_path(out):
            pytest.fail("must raise before yielding")
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
        assert (out / "old").exists()  # old output kept until the new one is complete
    assert [p.name for p in out.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.ome.zarr"]


def test_nothing_written_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing was written"):
        with atomic_path(tmp_path / "x.tif"):
            pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
        with atomic_path(ro / "x.tif"):
            pass


def test_killed_writer_leaves_only_a_hidden_partial(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    code = (
        "import os, sys\n"
        "from napari_histo.io._atomic import atomic_path\n"
        f"with atomic_path({str(out)!r}) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os._exit(9)\n"  # no cleanup runs, as with SIGKILL
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    left = list(tmp_path.iterdir())
    assert not out.exists() and len(left) == 1 and left[0].name.startswith(".out.tif.partial-")
    assert remove_stale_partials(out) == left
    assert list(tmp_path.iterdir()) == []
