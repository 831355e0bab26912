"""engine.live.StoreLevel: a store level read on demand, before and while it is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_histo.engine.live import StoreLevel, shown_from_store, store_levels
from napari_histo.io.ome_zarr import pyramid_depth


def test_missing_store_reads_zeros_then_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "p.ome.zarr"
    lv = StoreLevel(str(path), 0, (40, 60))
    assert lv.shape == (40, 60) and lv.ndim == 2 and lv.dtype == np.float32
    out = lv[5:10, 0:60]
    assert out.shape == (5, 60) and not out.any()  # not created yet: nothing to show
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = g.create_array("0", shape=(40, 60), chunks=(16, 16), dtype="uint8", fill_value=0)
    arr[0:16, 0:16] = 255
    np.testing.assert_allclose(lv[0:20, 0:20][:16, :16], 1.0)
    assert not lv[16:, :].any()
    labels = lv.at_threshold(0.5)
    assert labels.dtype == np.uint8 and labels[0:2, 0:2].tolist() == [[1, 1], [1, 1]]
    assert np.asarray(labels).sum() == 16 * 16


@pytest.mark.parametrize("classes,expected", [(2, 0.75), (3, 0.75)])
def test_class_axis_reads_as_foreground(tmp_path: Path, classes: int, expected: float) -> None:
    g = zarr.open_group(str(tmp_path / "c.ome.zarr"), mode="w", zarr_format=2)
    p = np.zeros((classes, 8, 8), np.float16)
    p[0] = 0.25  # background
    p[1] = 0.75
    g.create_array("0", shape=p.shape, chunks=p.shape, dtype="float16", fill_value=0)[...] = p
    got = StoreLevel(str(tmp_path / "c.ome.zarr"), 0, (8, 8))[2:4, :]
    np.testing.assert_allclose(got, expected)


def test_store_levels_match_the_writer_pyramid() -> None:
    levels = store_levels("/nowhere", (3567, 4443))
    assert len(levels) == pyramid_depth((3567, 4443))
    assert [lv.shape for lv in levels[:2]] == [(3567, 4443), (1784, 2222)]
    assert max(levels[-1].shape) <= 256
    assert shown_from_store((3567, 4443)) and not shown_from_store((2048, 1000))


def test_reads_are_cached_until_a_written_block_is_forgotten(tmp_path: Path) -> None:
    """Pans read cached chunks; a landed block drops exactly its chunks, on every level."""
    from napari_histo.engine.store_view import forget_box, forget_store

    path = str(tmp_path / "s.ome.zarr")
    g = zarr.open_group(path, mode="w", zarr_format=2)
    a0 = g.create_array("0", shape=(64, 64), chunks=(16, 16), dtype="float16", fill_value=0)
    a1 = g.create_array("1", shape=(32, 32), chunks=(16, 16), dtype="float16", fill_value=0)
    lv0, lv1 = StoreLevel(path, 0, (64, 64)), StoreLevel(path, 1, (32, 32))
    assert not lv0[0:64, 0:64].any() and not lv1[0:32, 0:32].any()
    a0[0:16, 0:16] = 1
    a0[48:64, 48:64] = 1
    a1[0:8, 0:8] = 1
    a1[24:32, 24:32] = 1
    assert not lv0[0:64, 0:64].any()  # cached: no zarr read for a pan over seen chunks
    assert forget_box(path, (0, 0, 16, 16)) == 2  # its level-0 chunk and level-1 chunk
    got0, got1 = lv0[0:64, 0:64], lv1[0:32, 0:32]
    assert got0[:16, :16].all() and not got0[48:, 48:].any()  # the other block: not landed
    assert got1[:8, :8].all() and not got1[24:, 24:].any()
    forget_store(path)
    assert lv0[0:64, 0:64][48:, 48:].all()


def test_streamed_store_shows_put_chunks_and_zeros_elsewhere(tmp_path: Path) -> None:
    """While streamed, the GUI reads nothing from zarr: chunks come from the worker."""
    from napari_histo.engine.store_view import (
        put_chunks,
        read_block_chunks,
        start_streaming,
        stop_streaming,
    )
    from napari_histo.io.ome_zarr import add_levels, update_levels

    path = str(tmp_path / "w.ome.zarr")
    g = zarr.open_group(path, mode="w", zarr_format=2)
    g.create_array("0", shape=(600, 520), chunks=(128, 128), dtype="uint8", fill_value=0)
    g.attrs["multiscales"] = [{"version": "0.4", "name": "p", "axes": [
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}], "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]
    n = add_levels(g)
    arrays = [g[str(k)] for k in range(n)]
    levels = store_levels(path, (600, 520))
    assert len(levels) == n == 3
    start_streaming(path)
    box = (128, 256, 256, 384)
    arrays[0][128:256, 256:384] = 255
    update_levels(arrays, "image", box)
    assert not levels[0][0:600, 0:520].any()  # written, but not announced: nothing read
    chunks = read_block_chunks(arrays, box)
    assert {k[0] for k in chunks} == set(range(n))
    put_chunks(path, chunks)
    for k, lv in enumerate(levels):
        full = lv[0:lv.shape[0], 0:lv.shape[1]]
        f = 2**k
        np.testing.assert_allclose(full[128 // f: 256 // f, 256 // f: 384 // f], 1.0)
        assert full.sum() == pytest.approx((128 // f) ** 2)
    stop_streaming(path)
    arrays[0][0:128, 0:128] = 255  # not streamed any more: uncached chunks come from zarr
    assert levels[0][0:128, 0:128].all()
