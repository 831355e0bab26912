"""Prediction stores under hostile input: what overwrite may delete, what resume may continue,
failures counted wherever they happen, unfinished stores visible, one writer at a time, and
no empty store left by a failed run. Real stores, checkpoints and slides; the CLI end to end."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_histo.cli import main
from napari_histo.core.errors import ConfigError, OutputExistsError
from napari_histo.core.progress import Message, Progress, run_task
from napari_histo.engine.inference import InferenceConfig, is_complete, predict_slide
from napari_histo.engine.inference.writer import (
    StoreLock,
    done_dir,
    lock_path,
    prepare_output,
    read_meta,
)

CFG = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=1, tissue_only=False)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _partial(slide: Path, model, out: Path, cfg: InferenceConfig = CFG, blocks: int = 1) -> None:
    """A killed run: stop after ``blocks`` block(s) landed in the store."""
    gen = predict_slide(slide, model, cfg.replace(block_tiles=1), out_path=out)
    n = 0
    for ev in gen:
        if isinstance(ev, Progress) and ev.info and "y0" in ev.info:
            n += 1
            if n == blocks:
                break
    gen.close()
    assert out.is_dir() and not is_complete(out)


@pytest.fixture(scope="module")
def done_store(seg_ckpt: Path, syn_slide: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("done") / "pred.ome.zarr"
    run_task(predict_slide(syn_slide, seg_ckpt, CFG, out_path=out))
    return out


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory) -> Path:
    """Same architecture as ``seg_ckpt``, other weights."""
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model

    torch.manual_seed(1)
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "other.pt", build_model(spec),
                           spec=spec, task="segment", class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(mpp=1.0, patch_size=128))


# ---------------------------------------------------------------- 1. overwrite deletes only ours


def test_overwrite_refuses_what_we_did_not_write(seg_ckpt: Path, syn_slide: Path, tmp_path: Path,
                                                 capsys) -> None:
    from napari_histo.io.ome_zarr import write_ome_zarr

    notes = tmp_path / "notes.ome.zarr"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    plain = tmp_path / "plain.ome.zarr"
    plain.write_text("a file")
    foreign = write_ome_zarr(tmp_path / "foreign.ome.zarr", np.zeros((64, 64), np.uint8),
                             kind="labels")  # napari-histo attrs, but no prediction
    forged = tmp_path / "forged.ome.zarr"  # our attributes, but no prediction inside
    forged.mkdir()
    (forged / ".zattrs").write_text(json.dumps({"napari_histo": {"task": "segment"}}))
    (forged / "thesis.tex").write_text("years of work")
    base = ["predict", str(syn_slide), "--model", str(seg_ckpt), "--tile", "128", "--overlap",
            "32", "--all-tiles", "--quiet", "--overwrite"]
    for victim in (notes, plain, foreign, forged):
        assert main([*base, "--out", str(victim)]) == 2
        line = _one_error_line(capsys)
        assert str(victim) in line and "not a napari-histo prediction store" in line
    assert (notes / "notes.txt").read_text() == "mine"
    assert plain.read_text() == "a file"
    assert read_meta(foreign) is None and (foreign / "0").is_dir()
    assert (forged / "thesis.tex").is_file()


def test_overwrite_replaces_our_store_and_its_markers(seg_ckpt, syn_slide: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "p.ome.zarr"
    _partial(syn_slide, seg_ckpt, out)
    assert done_dir(out).is_dir()
    res = run_task(predict_slide(syn_slide, seg_ckpt, CFG.replace(overwrite=True), out_path=out))
    assert res.complete and is_complete(out) and not done_dir(out).exists()
    assert not lock_path(out).exists()


def test_symlink_and_inputs_are_never_the_output(done_store: Path, syn_slide: Path,
                                                 tmp_path: Path) -> None:
    link = tmp_path / "link.ome.zarr"
    link.symlink_to(done_store, target_is_directory=True)
    for mode in ({"overwrite": True, "resume": False}, {"overwrite": False, "resume": True}):
        with pytest.raises(ConfigError, match="is a symbolic link; give the real path"):
            prepare_output(link, **mode)
    assert is_complete(done_store)  # the target survived
    with pytest.raises(ConfigError, match="is the input"):
        prepare_output(syn_slide, resume=False, overwrite=True, inputs=[syn_slide])
    # a slide folder (OME-Zarr slide) and an output inside it, or around it
    slide_dir = tmp_path / "slide.ome.zarr"
    slide_dir.mkdir()
    with pytest.raises(ConfigError, match="inside the input"):
        prepare_output(slide_dir / "p.ome.zarr", resume=False, overwrite=False,
                       inputs=[slide_dir])
    with pytest.raises(ConfigError, match="contains the input"):
        prepare_output(tmp_path, resume=False, overwrite=True, inputs=[slide_dir / "x.tif"])
    assert syn_slide.is_file()


# ---------------------------------------------------------------- 2. resume only what matches


def test_resume_refuses_other_checkpoint_settings_or_slide(seg_ckpt: Path, other_ckpt: Path,
                                                           syn_slide: Path, tmp_path: Path,
                                                           capsys) -> None:
    slide = tmp_path / "s.tif"
    shutil.copy(syn_slide, slide)
    out = tmp_path / "r.ome.zarr"
    _partial(slide, seg_ckpt, out)
    meta = read_meta(out)
    assert len(meta["checkpoint_sha256"]) == 64 and meta["slide_fingerprint"]["shape"] == [768, 1024]
    resume = CFG.replace(resume=True, block_tiles=1)
    with pytest.raises(ConfigError, match=r"written with checkpoint seg\.pt \(sha256 \w{12}\), "
                                          r"not other\.pt \(sha256 \w{12}\)"):
        run_task(predict_slide(slide, other_ckpt, resume, out_path=out))
    with pytest.raises(ConfigError, match="settings differ.*tile 128 vs 64"):
        run_task(predict_slide(slide, seg_ckpt, resume.replace(tile=64, overlap=16), out_path=out))
    # the CLI says the same in one line
    assert main(["predict", str(slide), "--model", str(other_ckpt), "--out", str(out), "--tile",
                 "128", "--overlap", "32", "--all-tiles", "--quiet", "--resume"]) == 2
    assert "not other.pt" in _one_error_line(capsys)
    with open(slide, "ab") as fh:  # the slide changed (still a readable TIFF)
        fh.write(b"\0" * 100)
    with pytest.raises(ConfigError, match="the slide changed"):
        run_task(predict_slide(slide, seg_ckpt, resume, out_path=out))
    assert not is_complete(out) and not lock_path(out).exists()


def test_resume_from_a_copied_slide_is_allowed(seg_ckpt: Path, syn_slide: Path,
                                               tmp_path: Path) -> None:
    """Same bytes, new modification time (copied to a faster disk): the same slide."""
    import os

    slide = tmp_path / "s.tif"
    shutil.copy(syn_slide, slide)
    out = tmp_path / "c.ome.zarr"
    _partial(slide, seg_ckpt, out)
    os.utime(slide, (1_000_000_000, 1_000_000_000))
    res = run_task(predict_slide(slide, seg_ckpt, CFG.replace(resume=True, block_tiles=1),
                                 out_path=out))
    assert res.complete and is_complete(out)


def test_resume_refuses_a_store_without_fingerprints(seg_ckpt: Path, syn_slide: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "old.ome.zarr"
    _partial(syn_slide, seg_ckpt, out)
    attrs = json.loads((out / ".zattrs").read_text())
    for key in ("checkpoint_sha256", "slide_fingerprint"):
        attrs["napari_histo"].pop(key)
    (out / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(ConfigError, match="older napari-histo"):
        run_task(predict_slide(syn_slide, seg_ckpt, CFG.replace(resume=True, block_tiles=1),
                               out_path=out))


def test_resume_of_the_same_run_still_works(seg_ckpt: Path, syn_slide: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "same.ome.zarr"
    _partial(syn_slide, seg_ckpt, out, blocks=2)
    res = run_task(predict_slide(syn_slide, seg_ckpt, CFG.replace(resume=True, block_tiles=1),
                                 out_path=out))
    assert res.complete and res.stats.resumed_tiles > 0


# ---------------------------------------------------------------- 3. failures counted


def _corrupt_slide(path: Path, row: int = 1, col: int = 1) -> Path:
    import tifffile

    from napari_histo.io.synthetic import write_synthetic_slide

    p, _ = write_synthetic_slide(path, shape=(512, 768), tile=256, levels=1, mpp=1.0,
                                 with_mask=False)
    with tifffile.TiffFile(p) as tif:
        page = tif.pages[0]
        i = row * 3 + col
        off, n = page.dataoffsets[i], page.databytecounts[i]
    raw = bytearray(p.read_bytes())
    raw[off : off + n] = b"\x00" * n
    p.write_bytes(bytes(raw))
    return p


def test_tile_cache_remembers_failures() -> None:
    from napari_histo.io._cache import TileCache

    cache = TileCache(1 << 20)
    cache.record_failure(("lvl", 0, 0), "bad")
    cache.put(("lvl", 0, 0), np.full((4, 4, 3), 255, np.uint8))
    with cache.track_failures() as t:  # met only as a cache hit: still a failure
        assert cache.get(("lvl", 0, 0)) is not None
        assert cache.get(("lvl", 0, 0)) is not None
    assert t.keys == {("lvl", 0, 0): "bad"}
    cache.clear()
    assert ("lvl", 0, 0) in cache.failures


def test_tile_failed_in_tissue_detection_counts(seg_ckpt: Path, tmp_path: Path, capsys) -> None:
    from napari_histo.engine.tissue import tissue_map
    from napari_histo.io.slide import open_slide

    slide = _corrupt_slide(tmp_path / "bad.tif")
    with open_slide(slide) as s, pytest.warns(UserWarning, match="could not be decoded"):
        tmap = tissue_map(s, max_side=1024)
    assert list(tmap.failed) == [(0, 1, 1)]
    assert tmap.fraction((256, 256, 512, 512)) == 1.0  # unreadable is not background
    # tissue detection decodes the bad tile first; prediction then gets it from the cache
    out = tmp_path / "bad.ome.zarr"
    assert main(["predict", str(slide), "--model", str(seg_ckpt), "--out", str(out), "--tile",
                 "128", "--overlap", "32", "--batch-size", "4", "--quiet"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.endswith("1 unreadable"), summary
    meta = read_meta(out)
    assert meta["failed_tiles"] == 1 and meta["failed_segments"][0][:3] == [0, 1, 1]
    # output at 1 um/px = level 0: the bad tile's box in output pixels
    assert [256, 256, 512, 512] in meta["failed_boxes"]
    assert main(["info", str(out)]) == 0
    assert "1 unreadable" in capsys.readouterr().out


def test_failures_of_a_killed_run_survive_its_resume(seg_ckpt: Path, tmp_path: Path) -> None:
    slide = _corrupt_slide(tmp_path / "bad2.tif", row=0, col=0)
    out = tmp_path / "bad2.ome.zarr"
    cfg = CFG.replace(block_tiles=1)
    _partial(slide, seg_ckpt, out, cfg=cfg, blocks=2)  # the first block reads the bad tile
    assert read_meta(out)["failed_tiles"] == 1  # recorded as it happened
    res = run_task(predict_slide(slide, seg_ckpt, cfg.replace(resume=True), out_path=out))
    assert res.complete and res.failed_tiles == 1 and read_meta(out)["failed_tiles"] == 1


# ---------------------------------------------------------------- 4. unfinished is visible


def test_unfinished_store_in_info_and_evaluate(seg_ckpt: Path, syn_slide: Path, tmp_path: Path,
                                               capsys) -> None:
    out = tmp_path / "u.ome.zarr"
    _partial(syn_slide, seg_ckpt, out, blocks=2)
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "UNFINISHED" in text and "blocks written" in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] is False and info["blocks_done"] >= 2
    assert info["blocks_total"] > info["blocks_done"]
    mask = syn_slide.with_name("syn_mask.tif")
    assert main(["evaluate", "--pred", str(out), "--truth", str(mask)]) == 2
    assert "unfinished" in _one_error_line(capsys)


def test_evaluate_pred_that_is_not_a_prediction(syn_slide: Path, tmp_path: Path, capsys) -> None:
    from napari_histo.io.ome_zarr import write_ome_zarr

    mask = syn_slide.with_name("syn_mask.tif")
    foreign = write_ome_zarr(tmp_path / "f.ome.zarr", np.zeros((64, 64), np.uint8))
    empty_group = tmp_path / "g.zarr"
    empty_group.mkdir()
    (empty_group / ".zattrs").write_text("{}")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("x")
    for pred in (foreign, empty_group, notes):
        assert main(["evaluate", "--pred", str(pred), "--truth", str(mask)]) == 2
        line = _one_error_line(capsys)
        assert "not a napari-histo prediction" in line or "neither a prediction" in line


# ---------------------------------------------------------------- 5. one writer at a time


def test_second_writer_is_refused(seg_ckpt: Path, syn_slide: Path, tmp_path: Path,
                                  capsys) -> None:
    out = tmp_path / "busy.ome.zarr"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(out).write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(),
                                              "time": 0}))
        assert main(["predict", str(syn_slide), "--model", str(seg_ckpt), "--out", str(out),
                     "--quiet"]) == 2
        line = _one_error_line(capsys)
        assert f"being written by another napari-histo process (pid {proc.pid}" in line
        assert not out.exists() and lock_path(out).exists()
    finally:
        proc.kill()
        proc.wait()
    # the same process cannot take a store twice either
    with StoreLock(out), pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
        StoreLock(out).acquire()
    assert not lock_path(out).exists()


def test_stale_lock_is_taken_over(seg_ckpt: Path, syn_slide: Path, tmp_path: Path) -> None:
    out = tmp_path / "stale.ome.zarr"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is no longer running
    lock_path(out).write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(),
                                          "time": 0}))
    events: list = []
    res = run_task(predict_slide(syn_slide, seg_ckpt, CFG, out_path=out), events.append)
    assert res.complete
    notes = [e.text for e in events if isinstance(e, Message) and "stale lock" in e.text]
    assert notes and f"pid {proc.pid}" in notes[0]
    assert not lock_path(out).exists()


# ---------------------------------------------------------------- 6. nothing left by a failure


def test_failed_new_run_leaves_nothing_but_interrupt_keeps_it(seg_ckpt: Path, syn_slide: Path,
                                                              tmp_path: Path,
                                                              monkeypatch) -> None:
    from napari_histo.engine.inference import _model

    out = tmp_path / "fail.ome.zarr"

    def boom(self, tiles):
        raise RuntimeError("device lost")

    monkeypatch.setattr(_model.Runner, "__call__", boom)
    with pytest.raises(RuntimeError, match="device lost"):
        run_task(predict_slide(syn_slide, seg_ckpt, CFG, out_path=out))
    assert not out.exists() and not done_dir(out).exists() and not lock_path(out).exists()

    def interrupt(self, tiles):
        raise KeyboardInterrupt

    monkeypatch.setattr(_model.Runner, "__call__", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_task(predict_slide(syn_slide, seg_ckpt, CFG, out_path=out))
    assert out.is_dir() and not is_complete(out) and not lock_path(out).exists()
    monkeypatch.undo()
    res = run_task(predict_slide(syn_slide, seg_ckpt, CFG.replace(resume=True), out_path=out))
    assert res.complete


def test_output_appearing_meanwhile_is_not_cleared(tmp_path: Path) -> None:
    from napari_histo.engine.inference.writer import ZarrSink

    out = tmp_path / "race.ome.zarr"
    out.mkdir()
    (out / "theirs.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="appeared"):
        ZarrSink.create(out, shape=(8, 8), chunk=8, num_classes=2, prob_dtype="uint8",
                        threshold=0.5, meta={"task": "segment", "fingerprint": {}}, mpp=None,
                        origin_um=(0.0, 0.0))
    assert (out / "theirs.txt").is_file()
