"""Stain normalisation (Macenko, Reinhard): fit on a reference image, apply to any image.

Fitted parameters are plain lists of floats (``{"method": ..., ...}``) so they live inside a
checkpoint (``preprocessing["stain"]``) and inference applies exactly what training applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError, DataError

METHODS = ("macenko", "reinhard")
_IO = 255.0
_BETA = 0.15
_ALPHA = 1.0


def _od(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    return -np.log((img.reshape(-1, 3).astype(np.float64) + 1.0) / (_IO + 1.0))


def _macenko_vectors(img: npt.NDArray[np.uint8]) -> tuple[np.ndarray, np.ndarray] | None:
    """Stain matrix (3, 2: H, E) and 99th-percentile concentrations, or None without tissue."""
    od = _od(img)
    tissue = od[(od > _BETA).all(axis=1)]
    if tissue.shape[0] < 100:
        return None
    if tissue.shape[0] > 200_000:  # subsample: eigen-analysis needs no more
        tissue = tissue[:: tissue.shape[0] // 200_000 + 1]
    _, vecs = np.linalg.eigh(np.cov(tissue.T))
    plane = vecs[:, 1:3]
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, _ALPHA), np.percentile(phi, 100 - _ALPHA)
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v1, v2], axis=1) if v1[0] > v2[0] else np.stack([v2, v1], axis=1)
    he = he * np.sign(he.sum(axis=0, keepdims=True) + 1e-12)
    he /= np.linalg.norm(he, axis=0, keepdims=True)
    conc = np.linalg.lstsq(he, tissue.T, rcond=None)[0]
    max_c = np.percentile(conc, 99, axis=1)
    return he, np.maximum(max_c, 1e-6)


def fit_stain(reference: npt.NDArray[np.uint8] | str | Path, method: str = "macenko") -> dict[str, Any]:
    """Fit ``method`` on a reference RGB image (array or image path); return storable params.

    Raises
    ------
    ConfigError
        Unknown method.
    DataError
        The reference holds too little tissue to estimate stains.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown stain normalisation {method!r}; use {' or '.join(METHODS)}")
    img = _load_rgb(reference)
    if method == "macenko":
        est = _macenko_vectors(img)
        if est is None:
            raise DataError("stain reference holds too little tissue for Macenko; pick another")
        he, max_c = est
        return {"method": "macenko", "stain_matrix": he.tolist(), "max_conc": max_c.tolist()}
    from skimage.color import rgb2lab

    lab = rgb2lab(img).reshape(-1, 3)
    return {"method": "reinhard", "mean": lab.mean(0).tolist(), "std": (lab.std(0) + 1e-6).tolist()}


def _load_rgb(src: npt.NDArray[np.uint8] | str | Path) -> npt.NDArray[np.uint8]:
    if isinstance(src, (str, Path)):
        from skimage.io import imread

        from napari_histo.core.limits import check_regular_file

        check_regular_file(src, what=f"stain reference {src}", error=DataError)
        try:
            src = imread(str(src))
        except Exception as err:
            raise DataError(f"cannot read stain reference {src}: {err}") from err
    arr = np.asarray(src)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise DataError(f"stain reference must be an RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3]).astype(np.uint8)


def normalize_image(img: npt.NDArray[np.uint8], params: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """Normalise one RGB uint8 image (H, W, 3) to the fitted reference; blank images pass."""
    method = params.get("method")
    if method == "macenko":
        est = _macenko_vectors(img)
        if est is None:
            return img
        he_src, max_src = est
        he_ref = np.asarray(params["stain_matrix"], dtype=np.float64)
        max_ref = np.asarray(params["max_conc"], dtype=np.float64)
        od = _od(img)
        conc = np.linalg.lstsq(he_src, od.T, rcond=None)[0]
        conc *= (max_ref / max_src)[:, None]
        out = (_IO + 1.0) * np.exp(-(he_ref @ conc)) - 1.0
        return np.clip(out.T, 0, 255).reshape(img.shape).astype(np.uint8)
    if method == "reinhard":
        from skimage.color import lab2rgb, rgb2lab

        lab = rgb2lab(img)
        flat = lab.reshape(-1, 3)
        mu, sd = flat.mean(0), flat.std(0) + 1e-6
        lab = (lab - mu) / sd * np.asarray(params["std"]) + np.asarray(params["mean"])
        return (np.clip(lab2rgb(lab), 0, 1) * 255 + 0.5).astype(np.uint8)
    raise ConfigError(f"unknown stain parameters {params!r}")


def normalize_batch(batch: npt.NDArray[np.uint8], params: dict[str, Any] | None) -> npt.NDArray[np.uint8]:
    """Normalise every image of an (N, H, W, 3) uint8 batch (no-op when ``params`` is None)."""
    if not params:
        return batch
    return np.stack([normalize_image(im, params) for im in batch])
