"""CLI basics: help, version, readable errors with exit code 2."""

from __future__ import annotations

import pytest

from napari_histo.cli import main


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "info" in capsys.readouterr().out


def test_missing_file_is_one_readable_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    code = main(["info", str(tmp_path / "nope.svs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "nope.svs" in err[0]
