"""The review-queue benchmark (benchmarks/bench_review.py) runs end to end at a tiny size on
the real data: real slides written, real training, prediction stores, oracle corrections."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_review.py"


def _load_bench() -> object:
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_review", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_review_quick(shared_data: Path, tmp_path: Path,
                            capsys: object) -> None:
    bench = _load_bench()
    out_json = tmp_path / "result.json"
    res = bench.main(["--quick", "--data", str(shared_data), "--cases", "glas,camelyon",  # type: ignore[attr-defined]
                      "--out", str(tmp_path / "work"), "--json", str(out_json)])
    printed = capsys.readouterr().out.strip().splitlines()  # type: ignore[attr-defined]
    assert printed[-1].startswith("ranked/random Dice gain after 1 rounds: ")
    assert printed[-1].endswith("(target >= 1.5)")
    assert json.loads(out_json.read_text())["summary"] == json.loads(json.dumps(res["summary"]))
    runs = res["runs"]
    strategies = {"ranked", "random", "lowest-confidence"}
    assert {(r["case"], r["strategy"]) for r in runs} == {(c, s) for c in ("glas", "camelyon")
                                                          for s in strategies}
    for r in runs:
        r0, r1 = r["rounds"]
        assert r0["reviewed"] == 0 and r0["area_px"] == 0
        assert r1["reviewed"] == 2 and len(set(r1["ids"])) == 2  # K distinct tiles
        assert 0 < r1["area_pct"] <= 100
        for d in (r0["dice_user"], r1["dice_user"], r1["dice_model_unreviewed"]):
            assert 0.0 <= d <= 1.0
    # every run starts from the same weak model's store, so round 0 is identical
    for case in ("glas", "camelyon"):
        d0 = {r["rounds"][0]["dice_user"] for r in runs if r["case"] == case}
        assert len(d0) == 1
    for case in ("glas", "camelyon"):
        s = res["summary"][case]
        assert set(s) >= strategies | {"ratio_ranked_random"}
        assert np.isfinite(s["ranked"]["dice0"])


def test_ratio_ci_is_ratio_of_means() -> None:
    bench = _load_bench()
    x, lo, hi = bench.ratio_ci(np.array([0.3, 0.2, 0.1]), np.array([0.1, 0.1, 0.1]))  # type: ignore[attr-defined]
    assert x == pytest.approx(2.0)
    assert lo <= x <= hi and 1.0 <= lo and hi <= 3.0
