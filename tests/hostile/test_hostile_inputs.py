"""Issue 9: a hostile-input suite over ``info``, the napari reader, ``predict``, ``evaluate``
and ``train``, generated at test time (no binary file is committed).

Each case asserts what a user is owed: exit code 2 and exactly one readable stderr line (or a
documented warning / success), no traceback, no hang, peak memory under 1.5 GB, and no file
outside the case's ``out/`` folder changed (inputs hashed before and after). All cases run
once per session, two at a time; ``NAPARI_HISTO_HOSTILE_REPORT=FILE`` writes the counts.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

# registered by conftest.py (importlib mode: siblings are not importable by name)
H = sys.modules["napari_histo_hostile_harness"]
C = sys.modules["napari_histo_hostile_cases"]
Case = C.Case
cli = H.cli_argv


def _rand(n: int, seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _set_pre(key: str, value: Any) -> Any:
    def mutate(p: dict[str, Any]) -> None:
        p["preprocessing"][key] = value
    return mutate


def _set_spec(key: str, value: Any) -> Any:
    def mutate(p: dict[str, Any]) -> None:
        p["spec"][key] = value
    return mutate


def _ck(d: Path, a: Any, mutate: Any, src: str = "seg") -> Path:
    return C.checkpoint_variant(a.seg_ckpt if src == "seg" else a.cls_ckpt, d / "model.pt", mutate)


def _predict(d: Path, a: Any, *extra: Any, model: Path | None = None, slide: Path | None = None,
             out: Path | None = None) -> list[str]:
    return cli("predict", slide or C.copy(a.slide, d / "slide.tif"), "--model",
               model or C.copy(a.seg_ckpt, d / "model.pt"), "--out", out or d / "out",
               "--device", "cpu", "--quiet", *extra)


def _evaluate_pred(d: Path, a: Any, truth: Path, pred: Path | None = None) -> list[str]:
    return cli("evaluate", "--pred", pred or C.copy(a.prediction, d / "slide.ome.zarr"),
               "--truth", truth, "--out", d / "out")


def _train(d: Path, a: Any, *extra: Any, data: Path | None = None) -> list[str]:
    return cli("train", "--task", "segment", "--data", data or C.copy(a.train_data, d / "data"),
               "--out", d / "out", "--model", "unet-tiny", "--patch-size", "64", "--epochs", "1",
               "--batch-size", "2", "--device", "cpu", "--quiet", *extra)


def _predict_into_input(d: Path, a: Any) -> list[str]:
    store = C.copy(a.prediction, d / "input.ome.zarr")
    return cli("predict", store, "--model", C.copy(a.seg_ckpt, d / "model.pt"), "--out", store,
               "--overwrite", "--device", "cpu", "--quiet")


def _overwrite_foreign_folder(d: Path, a: Any) -> list[str]:
    target = d / "notes.zarr"
    target.mkdir()
    (target / "notes.txt").write_text("a pathologist's notes\n")
    return _predict(d, a, "--overwrite", out=target)


def _overwrite_foreign_zarr(d: Path, a: Any) -> list[str]:
    target = C.ome_zarr_claiming(d / "image.ome.zarr", (3, 64, 64))
    return _predict(d, a, "--overwrite", out=target)


def _overwrite_symlink(d: Path, a: Any) -> list[str]:
    real = C.copy(a.prediction, d / "real.ome.zarr")
    link = d / "link.ome.zarr"
    link.symlink_to(real, target_is_directory=True)
    return _predict(d, a, "--overwrite", out=link)


def _overwrite_file(d: Path, a: Any) -> list[str]:
    f = d / "report.zarr"
    f.write_text("not a store")
    return _predict(d, a, "--overwrite", out=f)


def _resume_other_model(d: Path, a: Any) -> list[str]:
    C.unfinished_store(a.prediction, d / "out" / "slide.ome.zarr")
    other = _ck(d, a, _set_pre("std", [0.3, 0.3, 0.3]))
    return _predict(d, a, "--resume", model=other)


def _resume_foreign(d: Path, a: Any) -> list[str]:
    (d / "out" / "slide.ome.zarr").mkdir()
    (d / "out" / "slide.ome.zarr" / "data.txt").write_text("x")
    return _predict(d, a, "--resume")


def _fill(folder: Path) -> None:
    """Take every byte of a small filesystem."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_full(d: Path, a: Any) -> list[str]:
    _fill(d / "out")
    return _predict(d, a, out=d / "out" / "slide.ome.zarr")


def _disk_full_train(d: Path, a: Any) -> list[str]:
    _fill(d / "out")
    return _train(d, a)


def _pickle_ckpt(d: Path, a: Any) -> list[str]:
    return _predict(d, a, model=C.pickled_payload(d / "model.pt", d / "pwned"))


def _truncated(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    return C.write_bytes(dst, data[: int(len(data) * keep)])


def _bad_state(p: dict[str, Any]) -> None:
    key = next(iter(p["state_dict"]))
    p["state_dict"][key] = p["state_dict"][key][..., :1].clone()


def _drop_state(p: dict[str, Any]) -> None:
    p["state_dict"] = {}


def _pretrained_path(d: Path) -> Any:
    secret = d / "secret.pt"
    secret.write_bytes(b"not weights")

    def mutate(p: dict[str, Any]) -> None:
        p["spec"]["pretrained"] = str(secret)
        p["spec"]["weights"] = str(secret)
    return mutate


def _deep_geojson_reader(d: Path, a: Any) -> list[str]:
    return H.reader_argv(C.nested_geojson(d / "deep.geojson", 100_000))


def _set_class_names(value: Any) -> Any:
    def mutate(p: dict[str, Any]) -> None:
        p["class_names"] = value
    return mutate


def _multi_ok_and_bad(d: Path, a: Any) -> list[str]:
    good = C.copy(a.slide, d / "good.tif")
    bad = C.write_bytes(d / "bad.svs", _rand(5000))
    return cli("predict", good, bad, "--model", C.copy(a.seg_ckpt, d / "model.pt"), "--out",
               d / "out", "--device", "cpu", "--quiet")


def _billion_laughs(d: Path, a: Any) -> list[str]:
    ents = '<!ENTITY a0 "lol">' + "".join(
        f'<!ENTITY a{i} "{"&a" + str(i - 1) + ";" * 1}' + f'{("&a" + str(i - 1) + ";") * 9}">'
        for i in range(1, 10))
    (d / "bomb.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE lolz [{ents}]><ASAP_Annotations><Annotations>'
        '<Annotation Name="&a9;" Type="Polygon" PartOfGroup="_0"><Coordinates>'
        '<Coordinate Order="0" X="1" Y="1"/></Coordinates></Annotation></Annotations>'
        "</ASAP_Annotations>")
    return _evaluate_pred(d, a, d / "bomb.xml")


CASES: list[Case] = [
    # ---------------------------------------------------------------- info: files
    Case("info-missing", "info", lambda d, a: cli("info", d / "nope.svs"), fault="missing"),
    Case("info-empty", "info", lambda d, a: cli("info", C.write_bytes(d / "e.svs", b"")),
         fault="empty"),
    Case("info-random-bytes", "info",
         lambda d, a: cli("info", C.write_bytes(d / "r.svs", _rand(20000))), fault="garbage"),
    Case("info-tiff-magic-then-garbage", "info",
         lambda d, a: cli("info", C.write_bytes(d / "g.tif", b"II*\x00" + _rand(5000))),
         fault="corrupt header"),
    Case("info-tiff-bad-ifd-offset", "info",
         lambda d, a: cli("info", C.write_bytes(d / "o.tif", b"II*\x00\xff\xff\xff\x7f" + b"\0" * 64)),
         fault="corrupt header"),
    Case("info-truncated-header", "info",
         lambda d, a: cli("info", _truncated(a.slide, d / "t.tif", 0.002)), fault="truncated"),
    Case("info-truncated-half", "info",
         lambda d, a: cli("info", _truncated(a.slide, d / "t.tif", 0.5)), expect="either",
         fault="truncated"),
    Case("info-fifo", "info", lambda d, a: cli("info", C.fifo(d / "x.svs")), timeout=30,
         fault="special file"),
    Case("info-dev-zero", "info", lambda d, a: cli("info", "/dev/zero"), timeout=30,
         fault="special file"),
    Case("info-plain-folder", "info", lambda d, a: cli("info", d), fault="not a slide"),
    Case("info-symlink-loop", "info",
         lambda d, a: (os.symlink(d / "loop2.svs", d / "loop1.svs"),
                       os.symlink(d / "loop1.svs", d / "loop2.svs"),
                       cli("info", d / "loop1.svs"))[-1], fault="missing"),
    Case("info-tiff-bomb-1e6", "info",
         lambda d, a: cli("info", C.tiff_with_patched_size(d / "b.tif", 1_000_000, 1_000_000)),
         expect="either", fault="decompression bomb"),
    Case("info-tiff-bomb-4e9", "info",
         lambda d, a: cli("info", C.tiff_with_patched_size(d / "b.tif", 4_000_000_000,
                                                          4_000_000_000)),
         expect="either", fault="decompression bomb"),
    Case("info-tiff-zero-width", "info",
         lambda d, a: cli("info", C.tiff_with_patched_size(d / "z.tif", 0, 256)),
         fault="corrupt header"),
    Case("info-tiff-huge-tile", "info",
         lambda d, a: cli("info", C.tiff_with_patched_tag(d / "h.tif", "TileWidth", 1 << 30)),
         expect="either", fault="decompression bomb"),
    Case("info-png-bomb", "info",
         lambda d, a: cli("info", C.png_with_patched_size(d / "b.png", 100_000, 100_000)),
         expect="either", fault="decompression bomb"),
    Case("info-zarr-bomb", "info",
         lambda d, a: cli("info", C.ome_zarr_claiming(d / "b.ome.zarr",
                                                      (3, 10**12, 10**12))),
         expect="either", fault="decompression bomb"),
    Case("info-zarr-negative-shape", "info",
         lambda d, a: cli("info", C.ome_zarr_claiming(d / "n.ome.zarr", (3, -5, 64))),
         fault="corrupt header"),
    Case("info-zarr-bad-json", "info",
         lambda d, a: cli("info", (lambda p: ((p / ".zattrs").write_text("{not json"), p)[1])(
             C.ome_zarr_claiming(d / "j.ome.zarr", (3, 64, 64)))), fault="corrupt header"),
    Case("info-zarr-no-datasets", "info",
         lambda d, a: cli("info", (lambda p: ((p / ".zattrs").write_text(
             '{"multiscales": [{"version": "0.4", "datasets": []}]}'), p)[1])(
             C.ome_zarr_claiming(d / "k.ome.zarr", (3, 64, 64)))), fault="corrupt header"),
    Case("info-zarr-datasets-not-list", "info",
         lambda d, a: cli("info", (lambda p: ((p / ".zattrs").write_text(
             '{"multiscales": [{"version": "0.4", "datasets": 5}]}'), p)[1])(
             C.ome_zarr_claiming(d / "k.ome.zarr", (3, 64, 64)))), fault="corrupt header"),
    Case("info-jpeg-truncated", "info",
         lambda d, a: cli("info", C.write_bytes(d / "t.jpg", b"\xff\xd8\xff\xe0" + _rand(100))),
         expect="either", fault="truncated"),
    Case("info-bmp-garbage", "info",
         lambda d, a: cli("info", C.write_bytes(d / "g.bmp", b"BM" + _rand(200))),
         fault="corrupt header"),
    Case("info-unfinished-store", "info",
         lambda d, a: cli("info", C.unfinished_store(a.prediction, d / "u.ome.zarr")),
         expect="either", expect_out="unfinished", fault="unfinished output"),
    Case("info-broken-pipe", "info", lambda d, a: cli("info", "--json", C.copy(a.slide, d / "s.tif")),
         expect="pipe", close_stdout_early=True, fault="broken pipe"),
    # ---------------------------------------------------------------- napari reader
    Case("reader-random-svs", "reader",
         lambda d, a: H.reader_argv(C.write_bytes(d / "r.svs", _rand(3000))), fault="garbage"),
    Case("reader-empty-tif", "reader",
         lambda d, a: H.reader_argv(C.write_bytes(d / "e.tif", b"")), fault="empty"),
    Case("reader-fifo", "reader", lambda d, a: H.reader_argv(C.fifo(d / "p.svs")), expect="either",
         timeout=30, fault="special file"),
    Case("reader-tiff-bomb", "reader",
         lambda d, a: H.reader_argv(C.tiff_with_patched_size(d / "b.tif", 1_000_000, 1_000_000)),
         expect="either", fault="decompression bomb"),
    Case("reader-png-bomb", "reader",
         lambda d, a: H.reader_argv(C.png_with_patched_size(d / "b.png", 100_000, 100_000)),
         expect="either", fault="decompression bomb"),
    Case("reader-zarr-bomb", "reader",
         lambda d, a: H.reader_argv(C.ome_zarr_claiming(d / "b.ome.zarr", (3, 10**12, 10**12))),
         expect="either", fault="decompression bomb"),
    Case("reader-geojson-deep", "reader", _deep_geojson_reader, expect="either",
         fault="deep nesting"),
    Case("reader-geojson-garbage", "reader",
         lambda d, a: H.reader_argv(C.write_bytes(d / "g.geojson", b'{"type": "Feature", ' + _rand(50))),
         expect="either", fault="garbage"),
    Case("reader-xml-malformed", "reader",
         lambda d, a: H.reader_argv(C.write_bytes(d / "m.xml", b"<ASAP_Annotations><Annotations><Anno")),
         expect="either", fault="garbage"),
    Case("reader-unfinished-store", "reader",
         lambda d, a: H.reader_argv(C.unfinished_store(a.prediction, d / "u.ome.zarr")),
         expect="ok", expect_out="unfinished", fault="unfinished output"),
    # ---------------------------------------------------------------- predict: outputs
    Case("predict-overwrite-input-store", "predict", _predict_into_input, fault="data loss"),
    Case("predict-overwrite-foreign-folder", "predict", _overwrite_foreign_folder,
         fault="data loss"),
    Case("predict-overwrite-foreign-zarr", "predict", _overwrite_foreign_zarr, fault="data loss"),
    Case("predict-overwrite-symlink", "predict", _overwrite_symlink, fault="data loss"),
    Case("predict-overwrite-plain-file", "predict", _overwrite_file, fault="data loss"),
    Case("predict-out-exists-no-flag", "predict",
         lambda d, a: _predict(d, a, out=C.copy(a.prediction, d / "prev.ome.zarr")),
         fault="data loss"),
    Case("predict-out-read-only", "predict", lambda d, a: _predict(d, a, out=d / "out" / "x.zarr"),
         mount=("out", 64, True), fault="read-only output"),
    Case("predict-out-unwritable-root", "predict",
         lambda d, a: _predict(d, a, out=Path("/sys/napari-histo-test/x.ome.zarr")),
         fault="read-only output"),
    Case("predict-disk-full", "predict", _disk_full, mount=("out", 64, False),
         fault="disk full"),
    Case("predict-resume-other-model", "predict", _resume_other_model, fault="resume mismatch"),
    Case("predict-resume-foreign-folder", "predict", _resume_foreign, fault="resume mismatch"),
    # ---------------------------------------------------------------- predict: inputs
    Case("predict-slide-random", "predict",
         lambda d, a: _predict(d, a, slide=C.write_bytes(d / "r.svs", _rand(9000))),
         fault="garbage"),
    Case("predict-slide-fifo", "predict", lambda d, a: _predict(d, a, slide=C.fifo(d / "f.svs")),
         timeout=40, fault="special file"),
    Case("predict-slide-png-bomb", "predict",
         lambda d, a: _predict(d, a, "--slide-mpp", "0.5",
                               slide=C.png_with_patched_size(d / "b.png", 100_000, 100_000)),
         fault="decompression bomb"),
    Case("predict-slide-tiff-bomb", "predict",
         lambda d, a: _predict(d, a, slide=C.tiff_with_patched_size(d / "b.tif", 1_000_000,
                                                                    1_000_000)),
         fault="decompression bomb"),
    Case("predict-slide-zarr-bomb", "predict",
         lambda d, a: _predict(d, a, "--slide-mpp", "0.5",
                               slide=C.ome_zarr_claiming(d / "b.ome.zarr", (3, 10**12, 10**12))),
         fault="decompression bomb"),
    Case("predict-one-bad-of-two", "predict", _multi_ok_and_bad, fault="garbage"),
    # ---------------------------------------------------------------- predict: options
    Case("predict-mpp-tiny", "predict", lambda d, a: _predict(d, a, "--mpp", "0.0001"),
         fault="memory budget"),
    Case("predict-mpp-zero", "predict", lambda d, a: _predict(d, a, "--mpp", "0"), fault="bounds"),
    Case("predict-mpp-nan", "predict", lambda d, a: _predict(d, a, "--mpp", "nan"), fault="bounds"),
    Case("predict-mpp-inf", "predict", lambda d, a: _predict(d, a, "--mpp", "inf"), fault="bounds"),
    Case("predict-slide-mpp-negative", "predict",
         lambda d, a: _predict(d, a, "--slide-mpp", "-1"), fault="bounds"),
    Case("predict-level-99", "predict", lambda d, a: _predict(d, a, "--level", "99"),
         fault="bounds"),
    Case("predict-region-nan", "predict",
         lambda d, a: _predict(d, a, "--region", "nan,0,100,100"), fault="bounds"),
    Case("predict-region-inf", "predict",
         lambda d, a: _predict(d, a, "--region", "0,0,inf,100"), fault="bounds"),
    Case("predict-region-outside", "predict",
         lambda d, a: _predict(d, a, "--region", "90000,90000,90100,90100"), fault="bounds"),
    Case("predict-region-three-values", "predict",
         lambda d, a: _predict(d, a, "--region", "1,2,3"), fault="bounds"),
    Case("predict-region-text", "predict",
         lambda d, a: _predict(d, a, "--region", "a,b,c,d"), fault="bounds"),
    Case("predict-near-garbage", "predict", lambda d, a: _predict(d, a, "--near", "x,y"),
         fault="bounds"),
    Case("predict-tile-huge", "predict", lambda d, a: _predict(d, a, "--tile", "1000000"),
         fault="memory budget"),
    Case("predict-overlap-odd", "predict", lambda d, a: _predict(d, a, "--overlap", "3"),
         fault="bounds"),
    Case("predict-batch-zero", "predict", lambda d, a: _predict(d, a, "--batch-size", "0"),
         fault="bounds"),
    Case("predict-batch-huge", "predict",
         lambda d, a: _predict(d, a, "--batch-size", "100000000"), fault="memory budget"),
    Case("predict-readers-huge", "predict",
         lambda d, a: _predict(d, a, "--readers", "100000"), fault="bounds"),
    Case("predict-threshold-nan", "predict", lambda d, a: _predict(d, a, "--threshold", "nan"),
         fault="bounds"),
    Case("predict-stride-huge", "predict",
         lambda d, a: _predict(d, a, "--stride", "10000000", "--context", "10000000",
                               model=C.copy(a.cls_ckpt, d / "model.pt")), fault="memory budget"),
    Case("predict-bad-device", "predict", lambda d, a: _predict(d, a, "--device", "tpu:7"),
         fault="bounds"),
    # ---------------------------------------------------------------- predict: checkpoints
    Case("ckpt-mpp-tiny", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_pre("mpp", 0.0001))),
         fault="memory budget"),
    Case("ckpt-mpp-zero", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_pre("mpp", 0.0))), fault="bounds"),
    Case("ckpt-mpp-nan", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_pre("mpp", float("nan")))),
         fault="bounds"),
    Case("ckpt-mpp-string", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_pre("mpp", "fast"))), fault="types"),
    Case("ckpt-patch-negative", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_pre("patch_size", -64))),
         fault="bounds"),
    Case("ckpt-patch-huge", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_pre("patch_size", 10**7))),
         fault="memory budget"),
    Case("ckpt-std-zero", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_pre("std", [0, 0, 0]))),
         fault="bounds"),
    Case("ckpt-mean-short", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_pre("mean", [0.5]))), fault="types"),
    Case("ckpt-base-huge", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_spec("base", 100_000))),
         fault="memory budget"),
    Case("ckpt-depth-huge", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_spec("depth", 40))),
         fault="memory budget"),
    Case("ckpt-num-classes-huge", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_spec("num_classes", 10**6))),
         fault="bounds"),
    Case("ckpt-spec-name-unknown", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_spec("name", "../../etc/passwd"))),
         fault="types"),
    Case("ckpt-class-names-int", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _set_class_names(5))), fault="types"),
    Case("ckpt-task-unknown", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, lambda p: p.update(task="detonate"))),
         fault="types"),
    Case("ckpt-spec-not-dict", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, lambda p: p.update(spec=[1, 2]))),
         fault="types"),
    Case("ckpt-state-shapes", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _bad_state)), fault="types"),
    Case("ckpt-state-empty", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _drop_state)), fault="types"),
    Case("ckpt-pretrained-path", "predict",
         lambda d, a: _predict(d, a, model=_ck(d, a, _pretrained_path(d))), expect="either",
         fault="foreign file"),
    Case("ckpt-pickle-payload", "predict", _pickle_ckpt, forbid=("pwned",),
         fault="code execution"),
    Case("ckpt-random-bytes", "predict",
         lambda d, a: _predict(d, a, model=C.write_bytes(d / "m.pt", _rand(4000))),
         fault="garbage"),
    Case("ckpt-empty", "predict",
         lambda d, a: _predict(d, a, model=C.write_bytes(d / "m.pt", b"")), fault="empty"),
    Case("ckpt-truncated", "predict",
         lambda d, a: _predict(d, a, model=_truncated(a.seg_ckpt, d / "m.pt", 0.5)),
         fault="truncated"),
    Case("ckpt-fifo", "predict", lambda d, a: _predict(d, a, model=C.fifo(d / "m.pt")),
         timeout=40, fault="special file"),
    Case("ckpt-is-folder", "predict", lambda d, a: _predict(d, a, model=d), fault="not a file"),
    # ---------------------------------------------------------------- evaluate
    Case("evaluate-pred-not-prediction", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.copy(a.mask, d / "slide_mask.tif"),
                                     pred=C.ome_zarr_claiming(d / "x.ome.zarr", (3, 64, 64))),
         fault="not a prediction"),
    Case("evaluate-pred-plain-folder", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.copy(a.mask, d / "slide_mask.tif"), pred=d / "out"),
         fault="not a prediction"),
    Case("evaluate-pred-unfinished", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.copy(a.mask, d / "slide_mask.tif"),
                                     pred=C.unfinished_store(a.prediction, d / "u.ome.zarr")),
         fault="unfinished output"),
    Case("evaluate-pred-png-bomb", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.copy(a.mask, d / "slide_mask.tif"),
                                     pred=C.png_with_patched_size(d / "p.png", 100_000, 100_000)),
         fault="decompression bomb"),
    Case("evaluate-pred-fifo", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.copy(a.mask, d / "slide_mask.tif"),
                                     pred=C.fifo(d / "p.png")), timeout=40, fault="special file"),
    Case("evaluate-truth-random", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.write_bytes(d / "m.tif", _rand(3000))),
         fault="garbage"),
    Case("evaluate-truth-fifo", "evaluate", lambda d, a: _evaluate_pred(d, a, C.fifo(d / "m.tif")),
         timeout=40, fault="special file"),
    Case("evaluate-xml-huge-coords", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.asap_xml(d / "a.xml", [
             ("1e300", "1e300"), ("2e300", "1e300"), ("2e300", "2e300"), ("1e300", "2e300")])),
         expect="either", expect_err="skipped", fault="absurd values"),
    Case("evaluate-xml-nan-coords", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.asap_xml(d / "a.xml", [
             ("nan", "1"), ("5", "nan"), ("9", "9")])), expect="either", fault="absurd values"),
    Case("evaluate-xml-malformed", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.write_bytes(d / "a.xml", b"<ASAP_Annotations><Ann")),
         fault="garbage"),
    Case("evaluate-xml-billion-laughs", "evaluate", _billion_laughs, fault="decompression bomb"),
    Case("evaluate-geojson-deep", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.nested_geojson(d / "a.geojson", 100_000)),
         fault="deep nesting"),
    Case("evaluate-geojson-wrong-types", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.geojson(d / "a.geojson", {
             "type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
                 "type": "Polygon", "coordinates": "oops"}}]})), fault="types"),
    Case("evaluate-out-read-only", "evaluate",
         lambda d, a: _evaluate_pred(d, a, C.copy(a.mask, d / "slide_mask.tif")),
         mount=("out", 64, True), fault="read-only output"),
    Case("evaluate-model-empty-data", "evaluate",
         lambda d, a: cli("evaluate", "--model", C.copy(a.seg_ckpt, d / "m.pt"), "--data",
                          (d / "empty").mkdir() or d / "empty", "--device", "cpu"),
         fault="empty"),
    # ---------------------------------------------------------------- train
    Case("train-empty-folder", "train",
         lambda d, a: _train(d, a, data=(d / "empty").mkdir() or d / "empty"), fault="empty"),
    Case("train-labels-missing", "train",
         lambda d, a: _train(d, a, data=(lambda p: (
             __import__("shutil").rmtree(p / "labels"), p)[1])(C.copy(a.train_data, d / "data"))),
         fault="empty"),
    Case("train-corrupt-image", "train",
         lambda d, a: _train(d, a, data=(lambda p: (
             C.write_bytes(p / "images" / "img_0.png", b"\x89PNG\r\n\x1a\n" + _rand(100)), p)[1])(
                 C.copy(a.train_data, d / "data"))), expect="either", fault="corrupt"),
    Case("train-set-yaml-tag", "train",
         lambda d, a: _train(d, a, "--set", f"seed=!!python/object/apply:os.system ['touch {d}/pwned']"),
         forbid=("pwned",), fault="code execution"),
    Case("train-set-unknown-key", "train", lambda d, a: _train(d, a, "--set", "rocket=1"),
         fault="bounds"),
    Case("train-set-no-equals", "train", lambda d, a: _train(d, a, "--set", "rocket"),
         fault="bounds"),
    Case("train-config-yaml-tag", "train",
         lambda d, a: _train(d, a, "--config", C.yaml_file(
             d / "c.yaml", f"seed: !!python/object/apply:os.system ['touch {d}/pwned']\n")),
         forbid=("pwned",), fault="code execution"),
    Case("train-config-not-mapping", "train",
         lambda d, a: _train(d, a, "--config", C.yaml_file(d / "c.yaml", "- 1\n- 2\n")),
         fault="types"),
    Case("train-config-fifo", "train",
         lambda d, a: _train(d, a, "--config", C.fifo(d / "c.yaml")), timeout=40,
         fault="special file"),
    Case("train-epochs-negative", "train", lambda d, a: _train(d, a, "--epochs", "-1"),
         fault="bounds"),
    Case("train-lr-nan", "train", lambda d, a: _train(d, a, "--lr", "nan"), fault="bounds"),
    Case("train-lr-inf", "train", lambda d, a: _train(d, a, "--lr", "inf"), fault="bounds"),
    Case("train-batch-zero", "train", lambda d, a: _train(d, a, "--batch-size", "0"),
         fault="bounds"),
    Case("train-patch-huge", "train", lambda d, a: _train(d, a, "--patch-size", "1000000"),
         fault="memory budget"),
    Case("train-num-classes-huge", "train", lambda d, a: _train(d, a, "--num-classes", "1000000"),
         fault="bounds"),
    Case("train-time-limit-nan", "train", lambda d, a: _train(d, a, "--time-limit", "nan"),
         fault="bounds"),
    Case("train-mpp-tiny", "train",
         lambda d, a: _train(d, a, "--mpp", "0.0001", "--data-mpp", "0.5"),
         fault="memory budget"),
    Case("train-init-pickle", "train",
         lambda d, a: _train(d, a, "--init", C.pickled_payload(d / "i.pt", d / "pwned")),
         forbid=("pwned",), fault="code execution"),
    Case("train-image-png-bomb", "train",
         lambda d, a: _train(d, a, data=(lambda p: (
             C.png_with_patched_size(p / "images" / "img_0.png", 100_000, 100_000), p)[1])(
                 C.copy(a.train_data, d / "data"))), expect="either", fault="decompression bomb"),
    Case("train-image-tiff-bomb", "train",
         lambda d, a: _train(d, a, data=(lambda p: (
             (p / "images" / "img_0.png").unlink(),
             C.tiff_with_patched_size(p / "images" / "img_0.tif", 1_000_000, 1_000_000), p)[2])(
                 C.copy(a.train_data, d / "data"))), expect="either", fault="decompression bomb"),
    Case("train-image-fifo", "train",
         lambda d, a: _train(d, a, data=(lambda p: (
             C.fifo(p / "images" / "img_9.png"), C.fifo(p / "labels" / "img_9.png"), p)[2])(
                 C.copy(a.train_data, d / "data"))), expect="either", timeout=60,
         fault="special file"),
    Case("train-stain-reference-fifo", "train",
         lambda d, a: _train(d, a, "--stain-norm", "reinhard", "--stain-reference",
                             C.fifo(d / "ref.png")), timeout=40, fault="special file"),
    Case("train-stain-reference-garbage", "train",
         lambda d, a: _train(d, a, "--stain-norm", "macenko", "--stain-reference",
                             C.write_bytes(d / "ref.png", _rand(500))), fault="garbage"),
    Case("train-out-is-file", "train",
         lambda d, a: cli("train", "--task", "segment", "--data", C.copy(a.train_data, d / "data"),
                          "--out", C.write_bytes(d / "run.txt", b"x"), "--model", "unet-tiny",
                          "--epochs", "1", "--device", "cpu", "--quiet"), fault="not a folder"),
    Case("train-out-read-only", "train", lambda d, a: _train(d, a), mount=("out", 64, True),
         fault="read-only output"),
    Case("train-disk-full", "train", _disk_full_train, mount=("out", 64, False),
         fault="disk full"),
]


# ----------------------------------------------------------------------------- running


def _run_case(case: Case, root: Path, assets: Any) -> tuple[Case, Any]:
    d = root / case.name
    d.mkdir()
    (d / "out").mkdir()
    with H.small_filesystem(d / "out", case.mount[1], read_only=case.mount[2]) if case.mount \
            else _nothing() as mounted:
        if case.mount and not mounted:
            return case, None  # this machine cannot mount: the case is skipped, said below
        argv = case.build(d, assets)
        before = H.hash_tree(d, exclude=[d / "out"])
        outcome = H.run_child(argv, cwd=d, timeout=case.timeout,
                              close_stdout_early=case.close_stdout_early)
        outcome.changed = H.changed_files(before, H.hash_tree(d, exclude=[d / "out"]))
        outcome.changed += [f for f in case.forbid if (d / f).exists()]
    return case, outcome


class _nothing:
    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture(scope="session")
def outcomes(assets: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every case once, two at a time (CI has two cores)."""
    root = tmp_path_factory.mktemp("hostile-cases")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict((c.name, o) for c, o in pool.map(lambda c: _run_case(c, root, assets),
                                                         CASES))
    report = os.environ.get("NAPARI_HISTO_HOSTILE_REPORT")
    if report:
        Path(report).write_text(json.dumps(_summary(results), indent=2))
    return results


def _verdict(case: Case, o: Any) -> list[str]:
    """What went wrong for a user (empty: the case passed)."""
    if o is None:
        return []
    bad = []
    if o.timed_out:
        bad.append(f"hang: still running after {case.timeout:.0f} s")
    if o.killed_for_memory:
        bad.append(f"memory: killed above {H.RSS_LIMIT_MB} MB")
    elif o.peak_rss_mb > H.RSS_LIMIT_MB:
        bad.append(f"memory: peak {o.peak_rss_mb:.0f} MB")
    if o.traceback:
        bad.append("traceback shown")
    if o.changed:
        bad.append(f"files outside out/ changed: {o.changed}")
    lines = o.stderr_lines
    if any("unexpected error" in ln for ln in lines):
        bad.append("an unforeseen exception (one line, but a bug)")
    if case.expect == "error":
        if o.rc != 2:
            bad.append(f"exit code {o.rc}, expected 2")
        if len(lines) != 1:
            bad.append(f"{len(lines)} stderr lines, expected 1")
    elif case.expect == "ok":
        if o.rc != 0:
            bad.append(f"exit code {o.rc}, expected 0")
    elif case.expect == "either":
        if o.rc not in (0, 2):
            bad.append(f"exit code {o.rc}, expected 0 or 2")
        if o.rc == 2 and len(lines) != 1:
            bad.append(f"{len(lines)} stderr lines with exit code 2, expected 1")
    elif case.expect == "pipe":
        if lines:
            bad.append(f"broken pipe not quiet: {lines[:2]}")
    if case.expect_err and case.expect_err.lower() not in o.stderr.lower():
        bad.append(f"stderr does not mention {case.expect_err!r}")
    if case.expect_out and case.expect_out.lower() not in (o.stdout + o.stderr).lower():
        bad.append(f"output does not mention {case.expect_out!r}")
    return bad


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    by = {c.name: c for c in CASES}
    ran = {k: o for k, o in results.items() if o is not None}
    return {
        "cases": len(ran),
        "not_run_here": sorted(k for k, o in results.items() if o is None),
        "clear_errors": sum(o.rc == 2 and len(o.stderr_lines) == 1 and not o.traceback
                            for o in ran.values()),
        "documented_warnings_or_success": sum(o.rc == 0 and not o.traceback for o in ran.values()),
        "tracebacks": sum(o.traceback for o in ran.values()),
        "hangs": sum(o.timed_out for o in ran.values()),
        "over_memory": sum(o.killed_for_memory or o.peak_rss_mb > H.RSS_LIMIT_MB
                           for o in ran.values()),
        "files_changed_outside_out": sum(bool(o.changed) for o in ran.values()),
        "failed_cases": {k: _verdict(by[k], o) for k, o in ran.items() if _verdict(by[k], o)},
        "peak_rss_mb_max": max((o.peak_rss_mb for o in ran.values()), default=0.0),
        "peak_rss_mb_top": sorted(((round(o.peak_rss_mb), k) for k, o in ran.items()),
                                  reverse=True)[:5],
        "seconds_total": round(sum(o.seconds for o in ran.values()), 1),
        "surfaces": {s: sum(by[k].surface == s for k in ran) for s in
                     ("info", "reader", "predict", "evaluate", "train")},
    }


def test_corpus_is_broad() -> None:
    """Issue 9 asks for at least 60 cases covering every surface."""
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.surface for c in CASES} == {"info", "reader", "predict", "evaluate", "train"}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, outcomes: dict[str, Any]) -> None:
    o = outcomes[case.name]
    if o is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{case.name}: this machine cannot mount a small filesystem")
        pytest.skip("this machine cannot mount a small filesystem")
    bad = _verdict(case, o)
    assert not bad, (f"{case.name}: {'; '.join(bad)}\n--- argv rc={o.rc} "
                     f"rss={o.peak_rss_mb:.0f} MB {o.seconds:.1f} s\n--- stderr:\n"
                     f"{o.stderr[-3000:]}\n--- stdout:\n{o.stdout[-1500:]}")
