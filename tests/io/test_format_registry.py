"""The format registry (io.formats) is the one list of formats: the manifest, the reader, the
openers and the CLI agree with it; the OpenSlide formats are offered only with that extra;
plain pictures are left to napari's own reader. Also the model registry and settings."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_histo.core.errors import ConfigError, UnsupportedSlideError
from napari_histo.io import formats as F

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "napari.yaml"

needs_no_openslide = pytest.mark.skipif(F.openslide_available(),
                                        reason="tests the path without the openslide extra")


def _manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


# ---------------------------------------------------------------- consistency


def test_manifest_reader_patterns_are_the_registry() -> None:
    (reader,) = _manifest()["contributions"]["readers"]
    patterns = reader["filename_patterns"]
    assert len(patterns) == len(set(patterns))
    assert set(patterns) == set(F.reader_patterns())
    assert reader["accepts_directories"] is True  # OME-Zarr stores are directories
    assert any(f.directory for f in F.FORMATS)


def test_manifest_writer_extensions_are_the_registry() -> None:
    writers = _manifest()["contributions"]["writers"]
    exts = {e for w in writers for e in w["filename_extensions"]}
    assert exts == set(F.writer_suffixes())


def test_every_suffix_has_an_opener_that_imports() -> None:
    assert F.FORMATS
    for fmt in F.FORMATS:
        assert fmt.suffixes, fmt.name
        opener = F.OPENERS[fmt.opener]
        # the module imports without the optional dependency; the function exists
        fn = getattr(importlib.import_module(opener.module), opener.function)
        assert callable(fn), (fmt.name, opener)
        for s in fmt.suffixes:
            assert F.format_for_path(f"x{s}") is fmt, s
            assert F.format_for_path(f"X{s.upper()}") is fmt, s


def test_suffixes_are_unique_and_compound_ones_win() -> None:
    all_suffixes = F.slide_suffixes(available_only=False)
    assert len(all_suffixes) == len(set(all_suffixes))
    assert F.format_for_path("a.ome.tif").name == "ome-tiff"
    assert F.format_for_path("a.tif").name == "tiff"
    assert F.format_for_path("a.ome.zarr/").name == "ome-zarr"
    assert F.format_for_path("notes.txt") is None
    assert F.strip_suffix("tumor_064.ome.tiff") == "tumor_064"
    assert F.strip_suffix("a.b.svs") == "a.b"


def test_magic_bytes_belong_to_one_container_and_opener() -> None:
    seen: dict[bytes, str] = {}
    for fmt in F.FORMATS:
        for m in fmt.magic:
            assert seen.setdefault(m, fmt.container) == fmt.container
    for container in {f.container for f in F.FORMATS}:
        assert len({f.opener for f in F.formats_for_container(container)}) == 1


def test_nothing_listed_that_nothing_opens() -> None:
    """The drifted entries are gone: every suffix the reader, datasets, masks and sniffing
    use is a registered one (``.svslide``/``.mrxs``/``.vms`` only through OpenSlide)."""
    from napari_histo.engine.datasets import slides as ds
    from napari_histo.plugin import _reader

    registered = set(F.slide_suffixes(available_only=False))
    assert set(_reader.SLIDE_SUFFIXES) <= registered
    assert set(_reader.ZARR_SUFFIXES) <= registered
    assert set(ds.SLIDE_SUFFIXES) <= registered
    assert set(F.mask_suffixes()) <= registered
    for s in (".mrxs", ".vms", ".vmu", ".svslide"):
        assert F.format_for_path(f"x{s}").opener == "openslide"


# ---------------------------------------------------------------- OpenSlide not installed


@needs_no_openslide
def test_openslide_formats_not_claimed_without_the_extra(tmp_path: Path) -> None:
    from napari_histo.plugin._reader import get_reader

    assert "MIRAX" in F.describe_formats() and "'openslide' extra" in F.describe_formats()
    for name in ("slide.mrxs", "slide.vms", "slide.svslide", "slide.czi"):
        p = tmp_path / name
        p.write_bytes(b"[GENERAL]\nSLIDE_VERSION = 01.02\n")
        assert get_reader(str(p)) is None, name
        assert not F.format_for_path(p).available()
        msg = F.missing_extra_message(p)
        assert msg is not None and "\n" not in msg and "napari-histo[openslide]" in msg


@needs_no_openslide
def test_open_slide_says_which_extra_in_one_line(tmp_path: Path) -> None:
    from napari_histo.io.slide import open_slide

    p = tmp_path / "case.mrxs"
    p.write_bytes(b"\xff\xd8\xff\xe0 a MIRAX file")  # whatever it holds, it needs OpenSlide
    q = tmp_path / "case2.mrxs"
    q.write_bytes(b"[GENERAL]\n")
    for path in (p, q):
        with pytest.raises(UnsupportedSlideError, match=r"openslide") as info:
            open_slide(path)
        assert "\n" not in str(info.value)
    r = tmp_path / "x.svslide"
    r.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    with pytest.raises(UnsupportedSlideError, match=r"napari-histo\[openslide\]"):
        open_slide(r)


@needs_no_openslide
def test_cli_says_the_extra_is_needed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from napari_histo.cli import main

    p = tmp_path / "case.mrxs"
    p.write_bytes(b"[GENERAL]\n")
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "case.mrxs" in err[0] and "napari-histo[openslide]" in err[0]


def test_openslide_opener_module_imports_without_openslide() -> None:
    from napari_histo.io import _openslide

    assert callable(_openslide.open_openslide_parts)
    assert F.OPENERS["openslide"].extra == "openslide"


def test_pyproject_openslide_extra() -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    names = sorted(d.split(">")[0].split("=")[0].strip() for d in extras["openslide"])
    assert names == ["openslide-bin", "openslide-python"]


class _FakeOpenSlide:
    """The openslide-python API surface the fallback uses, over synthetic pixels whose R/G
    values encode the level's x/y (so misplaced reads show)."""

    instances: list[_FakeOpenSlide] = []

    def __init__(self, path: str) -> None:
        from PIL import Image

        self.level_count = 2
        self.level_dimensions = ((1000, 600), (500, 300))  # (width, height)
        self.level_downsamples = (1.0, 2.0)
        self.properties = {"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.26",
                           "openslide.vendor": "mirax", "openslide.objective-power": "20",
                           "openslide.level[0].tile-width": "256",
                           "openslide.level[0].tile-height": "128"}
        self.associated_images = {"label": Image.new("RGBA", (12, 10), (1, 2, 3, 255))}
        self.calls: list[tuple] = []
        self.closed = False
        _FakeOpenSlide.instances.append(self)

    def read_region(self, location, level, size):
        from PIL import Image

        self.calls.append((location, level, size))
        (x, y), (w, h) = location, size
        d = self.level_downsamples[level]
        arr = np.zeros((h, w, 4), np.uint8)
        arr[..., 0] = ((np.arange(w) + round(x / d)) % 251)[None, :]
        arr[..., 1] = ((np.arange(h) + round(y / d)) % 241)[:, None]
        arr[..., 2] = level
        arr[..., 3] = 255
        arr[:2, :2, 3] = 0  # unscanned corner: transparent -> white
        return Image.fromarray(arr, "RGBA")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_openslide(monkeypatch):
    import types

    mod = types.ModuleType("openslide")
    mod.OpenSlide = _FakeOpenSlide  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "openslide", mod)
    F._importable.cache_clear()
    _FakeOpenSlide.instances.clear()
    yield mod
    monkeypatch.delitem(sys.modules, "openslide")
    F._importable.cache_clear()


def test_openslide_fallback_behind_the_slide_interface(fake_openslide, tmp_path: Path) -> None:
    """With ``openslide`` importable, a .mrxs opens as a lazy Slide through read_region."""
    from napari_histo.io.slide import open_slide
    from napari_histo.plugin._reader import get_reader

    p = tmp_path / "case.mrxs"
    p.write_bytes(b"\xff\xd8\xff\xe0 MIRAX")
    assert F.openslide_available() and "MIRAX" in F.describe_formats()
    assert "extra" not in F.describe_formats()
    assert get_reader(str(p)) is not None
    assert F.missing_extra_message(p) is None
    with open_slide(p) as slide:
        (osr,) = _FakeOpenSlide.instances
        assert osr.calls == []  # opening reads no pixel
        assert slide.shape == (600, 1000) and slide.mpp == (0.26, 0.25)
        assert slide.metadata.vendor == "mirax" and slide.metadata.objective_power == 20
        assert slide.metadata.level_shapes[:2] == ((600, 1000), (300, 500))
        assert slide.metadata.tile_shapes[0] == (128, 256)
        region = slide.read_region((200, 100), 1, (60, 50))  # (y, x) level 0, (h, w)
        assert region.shape == (60, 50, 3) and region.dtype == np.uint8
        assert (region[..., 0][0] == (np.arange(50) + 50) % 251).all()
        assert (region[..., 1][:, 0] == (np.arange(60) + 100) % 241).all()
        assert (region[..., 2] == 1).all()
        assert all(size[0] <= 512 and size[1] <= 512 for _, _, size in osr.calls)
        corner = np.asarray(slide.levels[0][:4, :4])  # dask level, one tile
        assert (corner[:2, :2] == 255).all()  # transparent composited over white
        assert osr.calls[-1] == ((0, 0), 0, (256, 128))
        tile = np.asarray(slide.levels[0][130:140, 260:270])
        assert (tile[0, :, 0] == np.arange(260, 270) % 251).all()
        assert osr.calls[-1] == ((256, 128), 0, (256, 128))
        assert slide.metadata.associated == ("label",)
        assert slide.associated_image("label").shape == (10, 12, 3)
    assert osr.closed


# ---------------------------------------------------------------- reader acceptance rule


def _png(path: Path, shape=(64, 80), dpi: float | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.full((*shape, 3), 200, np.uint8))
    img.save(path, dpi=(dpi, dpi)) if dpi else img.save(path)
    return path


def test_plain_pictures_are_left_to_napari(tmp_path: Path) -> None:
    import tifffile
    from PIL import Image

    from napari_histo.io.sniff import looks_like_slide
    from napari_histo.plugin._reader import get_reader

    png = _png(tmp_path / "photo.png")
    jpg = tmp_path / "photo.jpg"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(jpg)
    tif = tmp_path / "tile.tif"
    tifffile.imwrite(tif, np.full((150, 150, 3), 120, np.uint8), photometric="rgb",
                     resolution=(72, 72))
    gif = tmp_path / "anim.gif"
    Image.fromarray(np.full((16, 16), 3, np.uint8)).save(gif)
    for p in (png, jpg, tif, gif):
        assert looks_like_slide(p) is False, p
        assert get_reader(str(p)) is None, p


def test_slides_masks_and_predictions_are_ours(tmp_path: Path) -> None:
    import tifffile

    from napari_histo.plugin._reader import get_reader

    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, np.full((256, 256, 3), 120, np.uint8), tile=(128, 128),
                     photometric="rgb")
    scanned = tmp_path / "scan.tif"  # untiled, but 0.25 um/px (40000 px/cm)
    tifffile.imwrite(scanned, np.full((64, 64, 3), 120, np.uint8), photometric="rgb",
                     resolution=(40000, 40000), resolutionunit="CENTIMETER")
    microscope_png = _png(tmp_path / "field.png", dpi=25400 / 0.5)  # 0.5 um/px
    glas = _png(tmp_path / "glas" / "images" / "train_1.png")  # GlaS: labels/ beside images/
    _png(tmp_path / "glas" / "labels" / "train_1.png")
    camelyon = _png(tmp_path / "case.png")  # CAMELYON-style sibling mask
    _png(tmp_path / "case_mask.png")
    annotated = _png(tmp_path / "roi.png")
    (tmp_path / "roi.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    for p in (tiled, scanned, microscope_png, glas, camelyon, annotated):
        assert get_reader(str(p)) is not None, p
    # a prediction export next to its store
    store = tmp_path / "pred" / "s1.ome.zarr"
    store.mkdir(parents=True)
    (store / ".zattrs").write_text('{"napari_histo": {"task": "segment", "complete": true}}')
    prob = _png(tmp_path / "pred" / "s1_probability.png")
    labels = _png(tmp_path / "pred" / "s1_labels.png")
    other = _png(tmp_path / "pred" / "s2_probability.png")  # no store beside it
    assert get_reader(str(prob)) is not None and get_reader(str(labels)) is not None
    assert get_reader(str(other)) is None


def test_damaged_files_with_slide_suffixes_stay_ours(tmp_path: Path) -> None:
    from napari_histo.plugin._reader import get_reader

    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    wsi = tmp_path / "any.svs"
    wsi.write_bytes(b"\x00" * 100)
    for p in (empty, text, wsi):
        assert get_reader(str(p)) is not None, p
    unknown = tmp_path / "notes.dat"
    unknown.write_text("hello")
    assert get_reader(str(unknown)) is None


# ---------------------------------------------------------------- model registry


def test_model_registry_is_torch_free_and_matches_the_engine() -> None:
    code = ("import sys\n"
            "from napari_histo.core import model_registry as m\n"
            "assert m.model_task('timm:efficientnet_b0') == 'classify'\n"
            "print('torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    from napari_histo.core import model_registry as m
    from napari_histo.engine import models as em

    assert em.SEGMENTATION_MODELS == m.model_names("segment")
    assert em.CLASSIFICATION_MODELS == m.model_names("classify")
    assert set(em.UNET_PRESETS) == set(m.model_names("segment"))
    assert m.model_choices("classify")[-1] == m.TIMM_ENTRY
    assert m.TIMM_ENTRY not in m.model_choices("segment")
    assert m.model_task("timm:resnet18") == "classify" and m.supports_pretrained("timm:x")
    for bad in ("gpt-5", "timm:", m.TIMM_ENTRY):
        with pytest.raises(ConfigError):
            m.model_task(bad)
    assert m.default_model("segment") == "unet-small"
    assert m.default_model("classify", transfer=True) == "resnet18"


def test_cli_train_model_help_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    from napari_histo.cli import main
    from napari_histo.core.model_registry import model_help

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = "".join(capsys.readouterr().out.split())  # argparse wraps at hyphens too
    assert model_help() in out
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "gpt-5", "--data", "x", "--out", "y"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'gpt-5'" in err[0]


# ---------------------------------------------------------------- settings


def test_settings_read_the_environment_on_each_call(monkeypatch, tmp_path: Path) -> None:
    from napari_histo.core import settings

    monkeypatch.setenv(settings.HOME_ENV, str(tmp_path / "home"))
    assert settings.home_dir() == tmp_path / "home"
    assert settings.runs_dir() == tmp_path / "home" / "runs"
    assert settings.predictions_dir(create=True).is_dir()
    monkeypatch.delenv(settings.HOME_ENV)
    assert settings.home_dir() == Path.home() / ".cache" / "napari-histo"
    monkeypatch.setenv(settings.CACHE_ENV, str(tmp_path / "c"))
    assert settings.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(settings.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert settings.cache_dir() == tmp_path / "xdg" / "napari-histo"
    monkeypatch.setenv(settings.TILE_CACHE_ENV, "bad")
    assert settings.tile_cache_mb() == 64.0
    monkeypatch.setenv(settings.DECODE_THREADS_ENV, "3")
    assert settings.decode_threads() == 3
    monkeypatch.setenv(settings.NOTHREADS_ENV, "yes")
    assert settings.threads_disabled()


def test_only_settings_reads_the_environment() -> None:
    src = REPO / "src" / "napari_histo"
    readers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                     if "os.environ" in p.read_text() or "getenv(" in p.read_text())
    assert readers == ["core/settings.py"], readers
    from napari_histo.core import settings

    for name in settings.ENVIRONMENT:
        assert name in (settings.__doc__ or ""), name
