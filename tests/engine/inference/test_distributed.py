"""A local dask cluster of 2 processes writes exactly what a single process writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.progress import run_task
from napari_histo.engine.distributed import predict_distributed
from napari_histo.engine.inference import InferenceConfig, is_complete, predict_slide


@pytest.mark.slow
def test_local_cluster_equals_single_process(seg_ckpt: Path, syn_slide: Path,
                                             tmp_path: Path) -> None:
    import zarr

    cfg = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=2, device="cpu")
    single = tmp_path / "single.ome.zarr"
    run_task(predict_slide(syn_slide, seg_ckpt, cfg, out_path=single))
    dist = tmp_path / "dist.ome.zarr"
    other = tmp_path / "other.ome.zarr"
    results = run_task(predict_distributed(
        [syn_slide, syn_slide], seg_ckpt, cfg.replace(scheduler="local:2"), [dist, other],
        region=None, blocks_per_task=1))
    assert all(r is not None and r.complete for r in results)
    assert is_complete(dist) and is_complete(other)
    a = zarr.open_group(str(single), mode="r")
    for path in (dist, other):
        b = zarr.open_group(str(path), mode="r")
        for key in ("0", "1", "labels/prediction/0", "labels/prediction/1"):
            np.testing.assert_array_equal(np.asarray(a[key][...]), np.asarray(b[key][...]))
