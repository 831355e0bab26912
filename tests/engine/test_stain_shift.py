"""Issue 10 (centre/scanner/stain shift): stain augmentation, re-staining, stored stain
normalisation at inference, and test-time augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from skimage.color import rgb2hed, rgb2lab
from torch import nn

from napari_histo.core.errors import ConfigError
from napari_histo.engine.inference import InferenceConfig
from napari_histo.engine.inference._model import Runner, as_loaded
from napari_histo.engine.models import build_model, make_spec
from napari_histo.engine.stain import fit_stain, fit_stain_prior, lab_stats, restain
from napari_histo.engine.transforms import (
    STAIN_PRIOR,
    AugmentConfig,
    TTAModel,
    hed_jitter,
    lab_to_rgb,
    rand_stain,
    rgb_to_lab,
    stain_augment,
    to_float01,
)

HE_A = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])  # Ruifrok H, E (rows)
HE_B = np.array([[0.50, 0.80, 0.33], [0.20, 0.90, 0.40]])  # another lab's stain vectors


def _tissue(he: np.ndarray, seed: int = 0, size: int = 128) -> np.ndarray:
    """Synthetic H&E by Beer-Lambert: blob nuclei (H) on eosin stroma, some white space."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    h = np.zeros((size, size))
    for _ in range(40):
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(3, 7)]
        h += 1.2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    e = 0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    e[:, : size // 8] = 0.02  # background strip
    he_n = he / np.linalg.norm(he, axis=1, keepdims=True)
    od = h[..., None] * he_n[0] + e[..., None] * he_n[1]
    return np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)


# -- re-staining ------------------------------------------------------------------------------

def test_restain_moves_colour_to_target_and_keeps_structure() -> None:
    src_img, tgt_img = _tissue(HE_A, 0), _tissue(HE_B, 0)  # same tissue, two labs' stains
    source, target = fit_stain(src_img), fit_stain(tgt_img)
    out = restain(src_img, source, target)
    assert out.shape == src_img.shape and out.dtype == np.uint8
    # colour (LAB chroma a*, b*) moves most of the way to the target's
    lab_src, lab_tgt, lab_out = (np.asarray(lab_stats(i)[0])[1:] for i in (src_img, tgt_img, out))
    assert np.linalg.norm(lab_out - lab_tgt) < 0.3 * np.linalg.norm(lab_src - lab_tgt)
    # the stain vectors of the result are the target's
    got = np.asarray(fit_stain(out)["stain_matrix"])
    assert np.abs(got - np.asarray(target["stain_matrix"])).max() < 0.05
    # structure kept: haematoxylin of the result follows the source's nuclei
    h_src, h_out = rgb2hed(src_img)[..., 0].ravel(), rgb2hed(out)[..., 0].ravel()
    assert np.corrcoef(h_src, h_out)[0, 1] > 0.9
    # no source = fit the image itself (normalisation); mismatched methods are refused
    assert restain(src_img, None, target).shape == src_img.shape
    with pytest.raises(ConfigError):
        restain(src_img, fit_stain(src_img, "reinhard"), target)
    other = _tissue(HE_B, 1)
    rein = restain(src_img, fit_stain(src_img, "reinhard"), fit_stain(other, "reinhard"))
    assert np.abs(np.asarray(lab_stats(rein)[0]) - lab_stats(other)[0]).max() < 2.0


# -- stain augmentation -----------------------------------------------------------------------

def test_lab_conversion_matches_skimage() -> None:
    img = _tissue(HE_A)
    lab = rgb_to_lab(to_float01(torch.from_numpy(img[None])))[0].permute(1, 2, 0).numpy()
    assert np.abs(lab - rgb2lab(img)).max() < 1e-3
    back = lab_to_rgb(torch.from_numpy(rgb2lab(img)).permute(2, 0, 1)[None].float())
    assert np.abs(back[0].permute(1, 2, 0).numpy() * 255 - img).max() < 1.0


def test_hed_jitter_keeps_uint8_range_and_shape() -> None:
    batch = np.stack([_tissue(HE_A, s, 64) for s in range(4)])
    cfg = AugmentConfig(randstain=0.0, hed=0.5, hed_shift=0.2)
    out = stain_augment(batch, 0, cfg)
    assert out.shape == batch.shape and out.dtype == np.uint8
    assert not np.array_equal(out, batch)
    assert stain_augment(batch[0], 0, cfg).shape == batch[0].shape
    x = hed_jitter(to_float01(torch.from_numpy(batch)), torch.Generator().manual_seed(0), 0.9, 0.5)
    assert x.shape == (4, 3, 64, 64) and float(x.min()) >= 0 and float(x.max()) <= 1
    same = stain_augment(batch, 0, AugmentConfig(randstain=0.0, hed=0.0, hed_shift=0.0))
    assert np.abs(same.astype(int) - batch).max() <= 1


def test_randstain_draws_lab_targets_from_the_prior() -> None:
    img = _tissue(HE_A, 0, 64)
    x = to_float01(torch.from_numpy(np.repeat(img[None], 64, 0)))
    out = rand_stain(x, torch.Generator().manual_seed(0), 1.0, p=1.0)
    means = rgb_to_lab(out).mean((2, 3)).numpy()
    # spread over images like the prior (clipping to the RGB gamut shrinks it somewhat)
    sd = means.std(0)
    assert (sd > 0.3 * np.asarray(STAIN_PRIOR["mean_sd"])).all()
    assert np.abs(means.mean(0) - np.asarray(STAIN_PRIOR["mean_mu"])).max() < 12
    assert torch.equal(rand_stain(x, torch.Generator(), 0.0), x)
    # structure: per-image correlation of haematoxylin with the input
    h_in = rgb2hed(img)[..., 0].ravel()
    h_out = rgb2hed((out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))[..., 0].ravel()
    assert np.corrcoef(h_in, h_out)[0, 1] > 0.8
    prior = fit_stain_prior([_tissue(HE_A, 0, 64), _tissue(HE_B, 1, 64)], ["a", "b"])
    assert set(prior) == set(STAIN_PRIOR) and all(len(v) == 3 for v in prior.values())


def test_training_default_has_stain_augmentation() -> None:
    d = AugmentConfig()
    assert d.randstain > 0 and d.hed >= 0.1
    assert AugmentConfig.with_stain(0).randstain == 0
    assert AugmentConfig.with_stain(2).hed == pytest.approx(2 * d.hed)
    assert AugmentConfig.off().randstain == 0 and AugmentConfig.off().hed == 0


# -- stored stain normalisation at inference --------------------------------------------------

class _ColourSeg(nn.Module):
    """A fixed colour-sensitive 1x1 segmentation model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[3.0, -2.0, 1.0], [-1.0, 2.0, -3.0]]).view(2, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_checkpoint_stain_normalisation_brings_restained_output_back() -> None:
    img = _tissue(HE_A, 0)
    shifted = restain(img, fit_stain(img), fit_stain(_tissue(HE_B, 1)))
    plain = as_loaded(_ColourSeg(), "cpu")
    pre = dict(plain.preprocessing, stain=fit_stain(img))
    normed = dataclasses.replace(plain, preprocessing=pre)
    ref = Runner(normed)(img[None])
    with_norm = Runner(normed)(shifted[None])
    without = Runner(plain)(shifted[None])
    err_with = np.abs(with_norm - ref).mean()
    err_without = np.abs(without - Runner(plain)(img[None])).mean()
    assert err_with < 0.5 * err_without


# -- test-time augmentation -------------------------------------------------------------------

class _PoolClassifier(nn.Module):
    """Dihedral-invariant classifier: per-pixel features, global average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("model", [_PoolClassifier(), _ColourSeg()])
def test_tta_on_symmetric_model_equals_plain(model: nn.Module) -> None:
    torch.manual_seed(0)
    tiles = np.stack([_tissue(HE_A, s, 32) for s in range(3)])
    lm = as_loaded(model, "cpu")
    a, b = Runner(lm)(tiles), Runner(lm, tta=True)(tiles)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5)


def _ops(t: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Tile-space op on (N, H, W, 3): flip (last spatial axis), then rot90 by k."""
    if flip:
        t = t[:, :, ::-1]
    return np.rot90(t, k, axes=(1, 2))


@pytest.mark.parametrize("name", ["unet-tiny", "cnn-small"])
def test_tta_equals_mean_of_transformed_predictions(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_spec(name, num_classes=2)).eval()
    lm = as_loaded(model, "cpu")
    tiles = np.stack([_tissue(HE_A, s, 64) for s in range(2)])
    plain_runner, tta_runner = Runner(lm), Runner(lm, tta=True)
    preds = []
    for flip in (False, True):
        for k in range(4):
            p = plain_runner(np.ascontiguousarray(_ops(tiles, k, flip)))
            if p.ndim == 4:  # map back: undo rot90, then the flip
                p = np.rot90(p, -k, axes=(2, 3))
                p = p[..., ::-1] if flip else p
            preds.append(p)
    expected = np.mean(preds, 0)
    got = tta_runner(tiles)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    if got.ndim == 4:  # a real, not symmetric, model: TTA differs from the plain output
        assert np.abs(got - plain_runner(tiles)).max() > 1e-4
    # the evaluation wrapper gives the same probabilities
    x = lm.preprocess(tiles)
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(TTAModel(model)(x), 1).numpy(), got, atol=1e-5)


def test_tta_non_square_tiles_use_flips() -> None:
    lm = as_loaded(_ColourSeg(), "cpu")
    tiles = np.ascontiguousarray(_tissue(HE_A, 0, 64)[None, :48])
    np.testing.assert_allclose(Runner(lm, tta=True)(tiles), Runner(lm)(tiles), atol=1e-5)


def test_inference_config_tta_is_a_checked_bool() -> None:
    assert InferenceConfig().tta is False
    cfg = InferenceConfig(tta=True)
    assert InferenceConfig.from_dict(cfg.to_dict()).tta is True
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="tta"):
            InferenceConfig(tta=bad)
    with pytest.raises(ConfigError, match="tta"):
        Runner(as_loaded(_ColourSeg(), "cpu"), tta="yes")  # type: ignore[arg-type]


def test_cli_tta_flags() -> None:
    from napari_histo.cli import build_parser

    p = build_parser()
    assert p.parse_args(["predict", "a.svs", "--model", "m.pt", "--out", "o", "--tta"]).tta is True
    assert p.parse_args(["predict", "a.svs", "--model", "m.pt", "--out", "o"]).tta is False
    assert p.parse_args(["evaluate", "--model", "m.pt", "--data", "d", "--tta"]).tta is True
