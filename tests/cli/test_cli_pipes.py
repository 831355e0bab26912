"""``napari-histo ... | head``: a reader that goes away early never gets a traceback back.

Each command runs as a child whose stdout is a pipe closed before the child writes (as
``| head -1`` does once it has its line): every write then fails with EPIPE. The child must
exit quietly, with 141 (or 0 when argparse already swallowed the failed write of --help),
and print nothing on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from napari_histo.cli import SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[2]


def _closed_stdout(argv: Sequence[str | os.PathLike[str]], cwd: Path, *,
                   unbuffered: bool = False, timeout: float = 300
                   ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"),
                                                       os.environ.get("PYTHONPATH")]))}
    # a user's stdout into a pipe is block-buffered: the failed write may only show at exit
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    r_fd, w_fd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "napari_histo.cli", *map(str, argv)],
                                cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=w_fd,
                                stderr=subprocess.PIPE, text=True)
    finally:
        os.close(w_fd)
        os.close(r_fd)  # the reader is gone before the child's first write
    _, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def _assert_quiet(res: subprocess.CompletedProcess[str], codes: tuple[int, ...] = (141,)) -> None:
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert "Exception ignored" not in res.stderr, res.stderr
    assert not res.stderr.strip(), res.stderr
    assert res.returncode in codes, (res.returncode, res.stderr)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic slide with its mask, an untrained U-Net checkpoint, a prediction."""
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model
    from napari_histo.io.synthetic import write_synthetic_slide

    d = tmp_path_factory.mktemp("pipes")
    slide, mask = write_synthetic_slide(d / "syn.tif", shape=(512, 768), tile=256, levels=2,
                                        mpp=0.5, seed=3)
    torch.manual_seed(0)
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    ckpt = save_checkpoint(d / "seg.pt", build_model(spec), spec=spec, task="segment",
                           class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(mpp=1.0, patch_size=128))
    store = d / "pred" / "syn.ome.zarr"
    assert main(["predict", str(slide), "--model", str(ckpt), "--out", str(store),
                 "--tile", "128", "--overlap", "32", "--quiet"]) == 0
    assert mask is not None
    return {"slide": slide, "mask": mask, "ckpt": ckpt, "store": store}


@pytest.mark.parametrize("argv", [["--help"], ["--version"],
                                  *([name, "--help"] for name in SUBCOMMANDS)],
                         ids=lambda a: " ".join(a))
@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_help_into_closed_pipe(argv: list[str], unbuffered: bool, tmp_path: Path) -> None:
    # buffered, the help text used to fail at interpreter exit ("Exception ignored ...
    # BrokenPipeError", exit 120); unbuffered, argparse swallows the failed write (exit 0)
    _assert_quiet(_closed_stdout(argv, tmp_path, unbuffered=unbuffered), codes=(0, 141))


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
def test_info_into_closed_pipe(assets: dict[str, Path], json_flag: list[str],
                               tmp_path: Path) -> None:
    _assert_quiet(_closed_stdout(["info", assets["slide"], *json_flag], tmp_path))
    _assert_quiet(_closed_stdout(["info", assets["store"], *json_flag], tmp_path))


def test_evaluate_into_closed_pipe(assets: dict[str, Path], tmp_path: Path) -> None:
    _assert_quiet(_closed_stdout(["evaluate", "--pred", assets["store"], "--truth",
                                  assets["mask"], "--json"], tmp_path))


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["lines", "json"])
def test_predict_into_closed_pipe(assets: dict[str, Path], json_flag: list[str],
                                  tmp_path: Path) -> None:
    # without --json the first informational line meets the closed pipe mid-run
    _assert_quiet(_closed_stdout(["predict", assets["slide"], "--model", assets["ckpt"],
                                  "--out", tmp_path / "out", "--tile", "128", "--overlap", "32",
                                  "--quiet", *json_flag], tmp_path))


def test_train_into_closed_pipe(shared_data: Path, tmp_path: Path) -> None:
    # the first message or epoch line meets the closed pipe inside the training loop
    _assert_quiet(_closed_stdout(
        ["train", "--task", "classify", "--data", shared_data / "camelyon16_patches",
         "--out", tmp_path / "run", "--model", "cnn-small", "--set", "model_kwargs={base: 8}",
         "--epochs", "1", "--steps-per-epoch", "2", "--patch-size", "56", "--batch-size", "8",
         "--mpp", "0.96", "--data-mpp", "0.243", "--group-by", "source_slide", "--threads", "1",
         "--quiet"], tmp_path))


def test_predict_with_stderr_into_a_pipe_closed_after_one_line(assets: dict[str, Path],
                                                              tmp_path: Path) -> None:
    # ``2>&1 | head -1``: the first line gets through, then the progress bar's writes fail
    # (tqdm swallows them, but their text stayed in stderr's buffer and used to fail the
    # exit flush: status 120) and the result line meets the closed pipe
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTHONUNBUFFERED", None)
    argv = ["predict", assets["slide"], "--model", assets["ckpt"], "--out", tmp_path / "out",
            "--tile", "128", "--overlap", "32", "--batch-size", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "napari_histo.cli", *map(str, argv)],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 141, first
