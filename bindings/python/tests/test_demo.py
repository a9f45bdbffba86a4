"""The demo's training loop: outputs, reproducibility and the statistics it reports."""
import csv
import math

import numpy as np
import pytest

from aepo.demo import __main__ as demo
from aepo.demo.runner import pass_at_k
from aepo.demo.task import DigitSumTask


def run(tmp_path, name, *extra):
    out = tmp_path / name
    rc = demo.main(["--steps", "4", "--targets", "0.8,1.2", "--quiet", "--no-plots", "--eval-samples", "8",
                    "--batch", "8", "--n", "4", "--out", str(out), *extra])
    assert rc == 0
    return out


def test_same_seed_gives_byte_identical_csv(tmp_path):
    a = run(tmp_path, "a")
    b = run(tmp_path, "b")
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    c = run(tmp_path, "c", "--seed", "7")
    assert (a / "metrics.csv").read_bytes() != (c / "metrics.csv").read_bytes()


def test_csv_rows_and_regulariser_columns(tmp_path):
    out = run(tmp_path, "w", "--combine", "weighted", "--modes", "grpo,adaptive")
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 3 * 4
    for r in rows:
        H = float(r["statistic"])
        assert math.isfinite(H) and H > 0
        if r["mode"] == "grpo":
            assert r["k"] == "0" and r["temperature"] == "nan"
        else:
            assert 0.5 <= float(r["temperature"]) <= 2.0
            assert int(r["k"]) <= int(r["n_positive"]) or int(r["n_positive"]) == 0


def test_task_counts_and_pass_at_k():
    t = DigitSumTask(length=6)
    assert t.count_correct_answers(27) == 55252
    assert sum(t.count_correct_answers(s) for s in range(55)) == 10 ** 6
    assert t.count_correct_answers(54) == 1
    held = t.held_out_prompts()
    assert not set(held) & set(t.prompts) and held.min() == 2 and held.max() == 52
    # pass@k: n=4, c=1 -> pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2, pass@4 = 1
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(10, 0, 5) == pytest.approx(0.0, abs=1e-12)
