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


def _macenko_apply(img: npt.NDArray[np.uint8], he_src: np.ndarray, max_src: np.ndarray,
                   target: dict[str, Any]) -> npt.NDArray[np.uint8]:
    he_ref = np.asarray(target["stain_matrix"], dtype=np.float64)
    max_ref = np.asarray(target["max_conc"], dtype=np.float64)
    od = _od(img)
    conc = np.linalg.lstsq(he_src, od.T, rcond=None)[0]
    conc *= (max_ref / max_src)[:, None]
    out = (_IO + 1.0) * np.exp(-(he_ref @ conc)) - 1.0
    return np.clip(out.T, 0, 255).reshape(img.shape).astype(np.uint8)


def _reinhard_apply(img: npt.NDArray[np.uint8], mu: np.ndarray, sd: np.ndarray,
                    target: dict[str, Any]) -> npt.NDArray[np.uint8]:
    from skimage.color import lab2rgb, rgb2lab

    lab = (rgb2lab(img) - mu) / sd * np.asarray(target["std"]) + np.asarray(target["mean"])
    return (np.clip(lab2rgb(lab), 0, 1) * 255 + 0.5).astype(np.uint8)


def restain(image: npt.NDArray[np.uint8], source_params: dict[str, Any] | None,
            target_params: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """Re-stain ``image`` from its own stain (``source_params``) to ``target_params``.

    Both are :func:`fit_stain` results of the same method; ``source_params`` None fits the
    image itself (that is :func:`normalize_image`). Giving a slide- or dataset-level source
    keeps a patch's relative stain amounts (a pale patch stays pale), which is what a shift
    benchmark needs. Macenko: concentrations under the source stain vectors, rescaled by the
    99th-percentile ratio and recomposed with the target vectors. Reinhard: LAB mean/std.
    """
    if source_params is None:
        return normalize_image(image, target_params)
    method = target_params.get("method")
    if source_params.get("method") != method:
        raise ConfigError(f"source stain is {source_params.get('method')!r} but target is {method!r}")
    img = _load_rgb(image)
    if method == "macenko":
        return _macenko_apply(img, np.asarray(source_params["stain_matrix"], dtype=np.float64),
                              np.asarray(source_params["max_conc"], dtype=np.float64), target_params)
    if method == "reinhard":
        return _reinhard_apply(img, np.asarray(source_params["mean"]),
                               np.asarray(source_params["std"]), target_params)
    raise ConfigError(f"unknown stain parameters {target_params!r}")


def lab_stats(image: npt.NDArray[np.uint8]) -> tuple[np.ndarray, np.ndarray]:
    """Per-image LAB mean and std (3 each), over all pixels (what RandStainNA matches)."""
    from skimage.color import rgb2lab

    lab = rgb2lab(_load_rgb(image)).reshape(-1, 3)
    return lab.mean(0), lab.std(0)


def fit_stain_prior(images: list[npt.NDArray[np.uint8]],
                    sources: list[str] | None = None) -> dict[str, tuple[float, float, float]]:
    """RandStainNA prior: mean and spread over images of the LAB mean and LAB std.

    ``sources`` (one name per image) weights every source equally, so a folder with many
    images does not dominate the stain distribution. Returns the ``STAIN_PRIOR`` layout of
    :mod:`engine.transforms` (``mean_mu``, ``mean_sd``, ``std_mu``, ``std_sd``).
    """
    if not images:
        raise DataError("fit_stain_prior needs at least one image")
    stats = np.array([np.concatenate(lab_stats(im)) for im in images])
    names = np.asarray(sources if sources is not None else ["all"] * len(images))
    w = np.zeros(len(images))
    for n in np.unique(names):
        w[names == n] = 1.0 / (names == n).sum()
    w /= w.sum()
    mu = (stats * w[:, None]).sum(0)
    sd = np.sqrt((((stats - mu) ** 2) * w[:, None]).sum(0))

    def t3(v: np.ndarray) -> tuple[float, float, float]:
        return (round(float(v[0]), 2), round(float(v[1]), 2), round(float(v[2]), 2))

    return {"mean_mu": t3(mu[:3]), "mean_sd": t3(sd[:3]), "std_mu": t3(mu[3:]), "std_sd": t3(sd[3:])}


def normalize_image(img: npt.NDArray[np.uint8], params: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """Normalise one RGB uint8 image (H, W, 3) to the fitted reference; blank images pass."""
    method = params.get("method")
    if method == "macenko":
        est = _macenko_vectors(img)
        if est is None:
            return img
        he_src, max_src = est
        return _macenko_apply(img, he_src, max_src, params)
    if method == "reinhard":
        mu, sd = lab_stats(img)
        return _reinhard_apply(img, mu, sd + 1e-6, params)
    raise ConfigError(f"unknown stain parameters {params!r}")


def normalize_batch(batch: npt.NDArray[np.uint8], params: dict[str, Any] | None) -> npt.NDArray[np.uint8]:
    """Normalise every image of an (N, H, W, 3) uint8 batch (no-op when ``params`` is None)."""
    if not params:
        return batch
    return np.stack([normalize_image(im, params) for im in batch])
