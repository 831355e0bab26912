"""Session-wide test setup: headless Qt, and the real data in ../shared/data.

Tests that need the shared data use the ``shared_data`` fixture: it skips when the folder is
missing on a developer machine, and fails when ``CI=true`` (CI must never silently skip them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Must be set before Qt is imported; tests run under xvfb-run (napari needs an X server for
# OpenGL even offscreen).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NAPARI_HISTO_TEST", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NAPARI_HISTO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; fail under CI when it is missing, skip otherwise."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"shared test data missing at {SHARED_DATA} (required when CI=true)")
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


class NgffCheck:
    """Checks every OME-Zarr napari-histo writes against third-party readers (issue 13).

    ``store(path)`` validates the group (and its image-labels) with ``ome_zarr_models``,
    opens it with ome-zarr-py's reader, checks the spec's per-level transforms and returns
    level 0's (y, x) scale and translation as napari-ome-zarr places the layer.
    """

    def store(self, path: Path, version: str, *, labels: bool = False
              ) -> tuple[tuple[float, float], tuple[float, float]]:
        import math

        import zarr
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Reader
        from ome_zarr_models import v04, v05

        models = v04 if version == "0.4" else v05
        group = zarr.open_group(str(path), mode="r")
        assert group.metadata.zarr_format == (2 if version == "0.4" else 3)
        (models.ImageLabel if labels else models.Image).from_zarr(group)
        if "labels" in group:
            models.Labels.from_zarr(group["labels"])
            for name in group["labels"].group_keys():
                models.ImageLabel.from_zarr(group["labels"][name])
        nodes = list(Reader(parse_url(str(path)))())
        assert nodes, f"ome-zarr-py finds no image in {path}"
        transforms = nodes[0].metadata["coordinateTransformations"]
        assert len(nodes[0].data) == len(transforms) >= 1
        scale0, trans0 = self._yx(transforms[0])
        for k, tr in enumerate(transforms):
            s, t = self._yx(tr)
            f = nodes[0].data[0].shape[-1] / nodes[0].data[k].shape[-1]
            f = 2.0 ** round(math.log2(f))  # levels halve (ceil): the factor is 2**k
            assert s == pytest.approx((scale0[0] * f, scale0[1] * f))
            assert t == pytest.approx(tuple(t0 + (f - 1) * s0 / 2
                                            for t0, s0 in zip(trans0, scale0, strict=True)))
        return scale0, trans0

    @staticmethod
    def _yx(transforms: list[dict]) -> tuple[tuple[float, float], tuple[float, float]]:
        scale = next(t["scale"] for t in transforms if t["type"] == "scale")
        trans = next((t["translation"] for t in transforms if t["type"] == "translation"),
                     [0.0] * len(scale))
        return (scale[-2], scale[-1]), (trans[-2], trans[-1])


@pytest.fixture(scope="session")
def ngff_check() -> NgffCheck:
    """:class:`NgffCheck`: ome_zarr_models + ome-zarr-py checks of a written store."""
    return NgffCheck()
