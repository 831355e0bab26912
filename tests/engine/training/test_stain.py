"""Macenko and Reinhard normalisation on real H&E tiles: the result matches the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.errors import ConfigError, DataError
from napari_histo.engine.datasets import read_image
from napari_histo.engine.stain import fit_stain, normalize_batch, normalize_image


@pytest.fixture(scope="module")
def tiles(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    ref = read_image(shared_data / "stain_tiles" / "tiatoolbox" / "target_image.png")[::2, ::2]
    src = read_image(shared_data / "stain_tiles" / "torchstain" / "source.png")
    return ref, src


def test_reinhard_matches_lab_statistics(tiles: tuple[np.ndarray, np.ndarray]) -> None:
    from skimage.color import rgb2lab

    ref, src = tiles
    params = fit_stain(ref, "reinhard")
    out = normalize_image(src, params)
    assert out.shape == src.shape and out.dtype == np.uint8
    lab = rgb2lab(out).reshape(-1, 3)
    before = np.abs(rgb2lab(src).reshape(-1, 3).mean(0) - params["mean"]).sum()
    after = np.abs(lab.mean(0) - params["mean"]).sum()
    assert after < 0.3 * before


def test_macenko_moves_stain_vectors_to_reference(tiles: tuple[np.ndarray, np.ndarray]) -> None:
    ref, src = tiles
    p_ref = fit_stain(ref, "macenko")
    p_src = fit_stain(src, "macenko")
    out = normalize_batch(src[None], p_ref)[0]
    p_out = fit_stain(out, "macenko")
    m_ref, m_src, m_out = (np.asarray(p["stain_matrix"]) for p in (p_ref, p_src, p_out))
    assert np.abs(m_out - m_ref).sum() < np.abs(m_src - m_ref).sum()
    blank = np.full((32, 32, 3), 250, np.uint8)  # no tissue: passes through
    assert np.array_equal(normalize_image(blank, p_ref), blank)


def test_stain_errors() -> None:
    with pytest.raises(ConfigError, match="unknown stain"):
        fit_stain(np.zeros((8, 8, 3), np.uint8), "vahadane")
    with pytest.raises(DataError, match="too little tissue"):
        fit_stain(np.full((64, 64, 3), 255, np.uint8), "macenko")
