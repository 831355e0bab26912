"""OME-Zarr writer and streaming store: round trips, pyramid, metadata, completion marker."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_histo.core.errors import ConfigError, DataError, OutputExistsError
from napari_histo.io.ome_zarr import (
    create_ome_zarr,
    downsample2,
    downsample2_dask,
    is_complete,
    open_ome_zarr,
    write_ome_zarr,
)


def _ref_pyramid(a: np.ndarray, kind: str, n: int) -> list[np.ndarray]:
    out = [a]
    for _ in range(n - 1):
        prev = out[-1]
        if prev.ndim == 3:
            out.append(np.moveaxis(downsample2(np.moveaxis(prev, -1, 0), kind), 0, -1))
        else:
            out.append(downsample2(prev, kind))
    return out


def test_labels_numpy_round_trip(tmp_path: Path, labels: np.ndarray) -> None:
    p = write_ome_zarr(tmp_path / "lab.ome.zarr", labels, mpp=0.5, chunks=128, name="mask")
    store = open_ome_zarr(p, require_complete=True)
    assert store.kind == "labels" and store.channels is None and store.mpp == (0.5, 0.5)
    # levels until the largest side fits max(chunk, 256)
    assert [z.shape for z in store.levels] == [(600, 700), (300, 350), (150, 175)]
    np.testing.assert_array_equal(store.read(), labels)
    for k in range(1, 3):  # labels pyramid = striding, never a new class
        np.testing.assert_array_equal(store.read(k), labels[:: 2**k, :: 2**k])
    attrs = zarr.open_group(str(p), mode="r").attrs.asdict()
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and ms["name"] == "mask"
    assert [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert all(a["unit"] == "micrometer" for a in ms["axes"])
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[0.5, 0.5], [1.0, 1.0], [2.0, 2.0]]
    assert "image-label" in attrs  # napari-ome-zarr opens it as a Labels layer
    assert attrs["napari_histo"]["complete"] is True
    zarray = json.loads((p / "0" / ".zarray").read_text())
    assert zarray["zarr_format"] == 2 and zarray["dimension_separator"] == "/"
    assert zarray["compressor"]["id"] == "blosc" and zarray["compressor"]["cname"] == "zstd"
    assert zarray["chunks"] == [128, 128]


def test_rgb_dask_round_trip(tmp_path: Path, rgb: np.ndarray) -> None:
    d = da.from_array(rgb, chunks=(300, 300, 3))  # chunks unlike the store's: rechunked
    p = write_ome_zarr(tmp_path / "rgb.ome.zarr", d, mpp=(0.25, 0.3), kind="image", chunks=256)
    store = open_ome_zarr(p)
    assert store.channels == 3 and store.kind == "image"
    assert store.levels[0].shape == (3, 1000, 1000)  # NGFF: channel axis before y, x
    np.testing.assert_array_equal(store.read(), rgb)
    ref = _ref_pyramid(rgb, "image", store.n_levels)
    for k in range(store.n_levels):
        np.testing.assert_array_equal(store.read(k), ref[k])
    # 2x2 mean (rounded) of real tissue
    lvl1 = store.read(1).astype(float)
    np.testing.assert_allclose(lvl1, rgb.reshape(500, 2, 500, 2, 3).mean(axis=(1, 3)), atol=0.51)
    attrs = store.group.attrs.asdict()
    ms = attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 0.5, 0.6]
    assert [c["color"] for c in attrs["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]
    lv = store.as_dask()
    assert lv[0].shape == (1000, 1000, 3) and lv[0].dtype == np.uint8


def test_float_heatmap_and_ngff_05(tmp_path: Path, heatmap: np.ndarray) -> None:
    hm16 = heatmap.astype(np.float16)
    p = write_ome_zarr(tmp_path / "hm.ome.zarr", hm16, kind="image", chunks=64, ngff_version="0.5")
    store = open_ome_zarr(p, require_complete=True)
    assert store.mpp is None and store.levels[0].dtype == np.float16
    np.testing.assert_array_equal(store.read(), hm16)
    ref = _ref_pyramid(hm16, "image", store.n_levels)
    assert [z.shape for z in store.levels] == [r.shape for r in ref]
    np.testing.assert_array_equal(store.read(2), ref[2])
    meta = json.loads((p / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["attributes"]["ome"]["version"] == "0.5"
    assert is_complete(p)


def test_multiscale_list_input(tmp_path: Path, labels: np.ndarray) -> None:
    lv = [labels, labels[::2, ::2], labels[::4, ::4]]
    p = write_ome_zarr(tmp_path / "ms.ome.zarr", [da.from_array(lv[0]), *lv[1:]], chunks=100)
    store = open_ome_zarr(p)
    assert store.n_levels == 3
    for k in range(3):
        np.testing.assert_array_equal(store.read(k), lv[k])
    with pytest.raises(ConfigError, match="level 1"):
        write_ome_zarr(tmp_path / "bad.ome.zarr", [labels, labels[::3, ::3]])
    assert not (tmp_path / "bad.ome.zarr").exists()


def test_dask_input_is_written_chunkwise(tmp_path: Path) -> None:
    """The writer computes blocks, never the whole array."""
    sizes: list[int] = []
    lock = threading.Lock()

    def block(block_info=None):  # noqa: ANN001, ANN202
        shp = block_info[None]["chunk-shape"]
        with lock:
            sizes.append(int(np.prod(shp)))
        y0 = block_info[None]["array-location"][0][0]
        return np.full(shp, (y0 // 128) % 5, dtype=np.uint8)

    arr = da.map_blocks(block, chunks=((128,) * 16, (128,) * 16), dtype=np.uint8)
    p = write_ome_zarr(tmp_path / "big.ome.zarr", arr, chunks=128)
    assert max(sizes) == 128 * 128 and len(sizes) == 256  # each chunk computed once
    store = open_ome_zarr(p)
    assert store.read(0, (1000, 0, 1024, 5))[0, 0] == (1000 // 128) % 5
    assert store.n_levels == 4


def test_overwrite_and_exists(tmp_path: Path, labels: np.ndarray) -> None:
    out = tmp_path / "x.ome.zarr"
    write_ome_zarr(out, labels)
    with pytest.raises(OutputExistsError, match="already exists"):
        write_ome_zarr(out, labels)
    write_ome_zarr(out, 1 - np.clip(labels, 0, 1), overwrite=True)
    np.testing.assert_array_equal(open_ome_zarr(out).read(), 1 - np.clip(labels, 0, 1))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.ome.zarr"]


def test_crash_leaves_nothing(tmp_path: Path, make_failing_dask) -> None:
    arr = make_failing_dask((512, 512), (128, 128), bad_block=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_ome_zarr(tmp_path / "crash.ome.zarr", arr, chunks=128)
    assert list(tmp_path.iterdir()) == []  # no final path, no partial sibling


def test_bad_arguments(tmp_path: Path, labels: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="integer dtype"):
        write_ome_zarr(tmp_path / "f.ome.zarr", labels.astype(np.float32), kind="labels")
    with pytest.raises(ConfigError, match="channel-first"):
        write_ome_zarr(tmp_path / "c.ome.zarr", np.zeros((3, 64, 64), np.uint8), kind="image")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- streaming store


def test_streaming_store_matches_one_shot(tmp_path: Path, heatmap: np.ndarray) -> None:
    """Chunks written in random order + region pyramids == one-shot write, byte for byte."""
    hm = (heatmap * 255).astype(np.uint8)
    H, W = hm.shape
    store = create_ome_zarr(
        tmp_path / "s.ome.zarr",
        (H, W),
        np.uint8,
        chunks=64,
        mpp=1.0,
        kind="image",
        name="prob",
        attrs={"model": "unet-test"},
    )
    assert not store.is_complete and not is_complete(store.path)
    assert not store.written_chunks().any()
    with pytest.raises(DataError, match="incomplete"):
        open_ome_zarr(store.path, require_complete=True)
    grid = [(y, x) for y in range(0, H, 64) for x in range(0, W, 64)]
    rng = np.random.default_rng(0)
    for i in rng.permutation(len(grid)):
        y, x = grid[i]
        store.write_block(y, x, hm[y : y + 64, x : x + 64])
        store.build_pyramid(region=(y, x, y + 64, x + 64))
    assert store.written_chunks().all()
    store.mark_complete(tiles=len(grid))
    assert is_complete(store.path)
    assert store.attrs["model"] == "unet-test" and store.attrs["tiles"] == len(grid)
    ref = open_ome_zarr(write_ome_zarr(tmp_path / "r.ome.zarr", hm, kind="image", chunks=64))
    assert ref.n_levels == store.n_levels
    for k in range(store.n_levels):
        np.testing.assert_array_equal(store.read(k), ref.read(k))


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_streaming_resume(tmp_path: Path, labels: np.ndarray, ngff: str) -> None:
    path = tmp_path / "run.ome.zarr"
    store = create_ome_zarr(
        path, labels.shape, np.uint8, chunks=128, kind="labels", ngff_version=ngff
    )
    zeros = np.zeros((128, 128), np.uint8)
    store.write_block(0, 0, zeros)  # an all-background chunk still counts as written
    store.write_block(128, 256, labels[128:256, 256:384])
    del store  # "crash": never marked complete
    assert not is_complete(path)
    with pytest.raises(OutputExistsError):
        create_ome_zarr(path, labels.shape, np.uint8, chunks=128)
    with pytest.raises(OutputExistsError, match="cannot resume"):
        create_ome_zarr(path, labels.shape, np.uint16, chunks=128, resume=True)
    store = create_ome_zarr(path, labels.shape, np.uint8, chunks=128, resume=True)
    done = store.written_chunks()
    assert done.shape == (5, 6) and done.sum() == 2 and done[0, 0] and done[1, 2]
    for iy, ix in zip(*np.nonzero(~done), strict=True):
        y, x = iy * 128, ix * 128
        store.write_block(y, x, labels[y : y + 128, x : x + 128])
    store.write_block(0, 0, labels[:128, :128])
    store.build_pyramid()
    store.mark_complete()
    again = open_ome_zarr(path, require_complete=True)
    np.testing.assert_array_equal(again.read(), labels)
    np.testing.assert_array_equal(again.read(2), labels[::4, ::4])
    fresh = create_ome_zarr(path, labels.shape, np.uint8, chunks=128, overwrite=True)
    assert not fresh.written_chunks().any() and not fresh.is_complete


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_streaming_rgb_channels(tmp_path: Path, rgb: np.ndarray, ngff: str) -> None:
    img = rgb[:300, :500]
    store = create_ome_zarr(
        tmp_path / "c.ome.zarr", img.shape, np.uint8, chunks=128, kind="image", ngff_version=ngff
    )
    assert not store.written_chunks().any()
    for y in range(0, 300, 128):
        for x in range(0, 500, 128):
            store.write_block(y, x, img[y : y + 128, x : x + 128])
    assert store.written_chunks().all()
    store.build_pyramid()
    np.testing.assert_array_equal(store.read(), img)
    np.testing.assert_array_equal(store.read(1), _ref_pyramid(img, "image", 2)[1])


def test_downsample2_dask_equals_numpy(heatmap: np.ndarray) -> None:
    d = da.from_array(heatmap, chunks=(101, 77))  # odd chunks: rechunked to even
    np.testing.assert_array_equal(
        downsample2_dask(d, "image").compute(), downsample2(heatmap, "image")
    )
    lab = (heatmap > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(
        downsample2_dask(da.from_array(lab, chunks=64), "labels").compute(), lab[::2, ::2]
    )


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_ome_zarr(tmp_path / "missing.ome.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError):
        open_ome_zarr(tmp_path / "plain")
    assert not is_complete(tmp_path / "plain")
    g = zarr.open_group(str(tmp_path / "nomulti.zarr"), mode="w", zarr_format=2)
    g.attrs["foo"] = 1
    with pytest.raises(DataError, match="multiscales"):
        open_ome_zarr(tmp_path / "nomulti.zarr")
    g.attrs["multiscales"] = [{"axes": ["y", "x"], "datasets": [{"path": "0"}]}]
    with pytest.raises(DataError, match="missing"):
        open_ome_zarr(tmp_path / "nomulti.zarr")
