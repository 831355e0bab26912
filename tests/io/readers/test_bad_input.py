"""The bad-input corpus: one clear error, or a warning and a slide that still displays."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.errors import HistoError, SlideOpenError, UnsupportedSlideError
from napari_histo.io.slide import open_slide


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        ("missing", SlideOpenError, "no such file"),
        ("empty", SlideOpenError, "empty"),
        ("truncated_header", SlideOpenError, "truncated or corrupt"),
        ("huge_header", SlideOpenError, "1000000 x 1000000"),
        ("text_as_tif", UnsupportedSlideError, "not a recognised"),
        ("plain_dir", UnsupportedSlideError, "not an OME-Zarr"),
    ],
)
def test_clear_errors(bad_corpus: dict[str, Path], name: str, error: type[HistoError], words: str) -> None:
    with pytest.raises(error) as info:
        open_slide(bad_corpus[name])
    msg = str(info.value)
    assert words in msg and "\n" not in msg
    assert bad_corpus[name].name in msg


def test_corrupt_tile_is_reported_and_filled(bad_corpus: dict[str, Path], synthetic_slide: tuple[Path, Path]) -> None:
    good = open_slide(synthetic_slide[0])
    with open_slide(bad_corpus["corrupt_tile"]) as s:
        with pytest.warns(UserWarning, match=r"tile \(row 0, column 1\)"):
            region = s.read_region((0, 0), 0, (256, 768))
        assert (region[:, 256:512] == 255).all()  # the bad tile is white
        np.testing.assert_array_equal(region[:, :256], good.read_region((0, 0), 0, (256, 256)))
        np.testing.assert_array_equal(region[:, 512:], good.read_region((0, 512), 0, (256, 256)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # reported once: the filled tile is cached
            s.read_region((0, 256), 0, (10, 10))
        # other levels unaffected
        np.testing.assert_array_equal(np.asarray(s.levels[2]), np.asarray(good.levels[2]))
    good.close()


def test_truncated_data_warns_and_opens(bad_corpus: dict[str, Path]) -> None:
    with pytest.warns(UserWarning, match="truncated"):
        s = open_slide(bad_corpus["truncated_data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top = s.read_region((0, 0), 0, (256, 256))
        bottom = s.read_region((768, 0), 0, (256, 256))
    assert top.std() > 0  # intact part decodes
    assert (bottom == 255).all()  # missing part is white
    s.close()


def test_wrong_extension_sniffs_content(bad_corpus: dict[str, Path], he_image: np.ndarray) -> None:
    with open_slide(bad_corpus["png_named_svs"]) as s:
        assert s.metadata.format == "png"
        np.testing.assert_array_equal(np.asarray(s.levels[0]), he_image)


def test_gray_and_16bit_open(bad_corpus: dict[str, Path]) -> None:
    for name in ("gray16_tiff", "gray8_tiff", "gray16_png", "rgba_png", "float_tiff"):
        with open_slide(bad_corpus[name]) as s:
            lvl = s.levels[0]
            assert lvl.dtype == np.uint8 and lvl.shape[2] == 3
            assert np.asarray(lvl[:5, :5]).shape == (5, 5, 3)


def test_closed_slide_raises(synthetic_slide: tuple[Path, Path]) -> None:
    s = open_slide(synthetic_slide[0])
    s.close()
    s.close()  # idempotent
    with pytest.raises(SlideOpenError, match="closed"):
        s.read_region((0, 0), 0, (10, 10))


def test_huge_stripped_header_opens_lazily(bad_corpus: dict[str, Path]) -> None:
    import tracemalloc

    tracemalloc.start()
    with pytest.warns(UserWarning, match="truncated"):
        s = open_slide(bad_corpus["huge_header_strips"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20  # nothing proportional to 10^12 px was allocated
    assert s.shape == (1_000_000, 1_000_000)
    assert max(s.metadata.level_shapes[-1]) <= 1024  # computed levels, lazily
    assert s.level_arrays[0].seg_shape == (256, 1024)  # wide rows: only needed columns read
    with pytest.warns(UserWarning, match="could not be decoded"):
        far = s.read_region((900_000, 900_000), 0, (8, 8))
    assert (far == 255).all()
    s.close()
