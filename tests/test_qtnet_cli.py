"""`tradesim train qtnet`: trains, writes a weights-only checkpoint and a CSV log, names errors."""

from __future__ import annotations

import csv

import torch
from typer.testing import CliRunner

from tradesim.cli import app

_TINY = ["--iterations", "2", "--eval-every", "1", "--n-envs", "4", "--episode-len", "8",
         "--hidden", "8", "--updates", "1", "--threads", "1", "--device", "cpu"]


def test_train_qtnet_writes_checkpoint_and_log(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "qtnet", "--data", "synthetic", "--symbols", "ALPHA",
                                      "--start", "2014-01-01", "--end", "2016-12-31",
                                      "--split", "2016-01-01", "--seed", "3", "--out", str(out),
                                      *_TINY])
    assert result.exit_code == 0, result.output
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["config"]["seed"] == 3 and ckpt["symbols"] == ["ALPHA"]
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [0, 1]
    assert all(r["val_log_growth"] != "" for r in rows)


def test_train_qtnet_rejects_a_split_that_leaves_no_validation_data(tmp_path):
    result = CliRunner().invoke(app, ["train", "qtnet", "--data", "synthetic", "--symbols", "ALPHA",
                                      "--start", "2014-01-01", "--end", "2016-12-31",
                                      "--split", "2016-12-20", "--out", str(tmp_path), *_TINY])
    assert result.exit_code == 2
    assert not (tmp_path / "best.pt").exists()


def test_oos_trains_per_seed_and_writes_the_report(tmp_path):
    out = tmp_path / "oos"
    result = CliRunner().invoke(app, ["oos", "--data", "synthetic", "--symbols", "ALPHA",
                                      "--start", "2014-01-01", "--end", "2016-12-31",
                                      "--split", "2016-06-01", "--seeds", "2", "--out", str(out),
                                      *_TINY])
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "seed1" / "best.pt").is_file()
    assert (out / "report.html").is_file()


def test_oos_needs_two_seeds(tmp_path):
    result = CliRunner().invoke(app, ["oos", "--data", "synthetic", "--symbols", "ALPHA",
                                      "--start", "2014-01-01", "--end", "2016-12-31",
                                      "--split", "2016-06-01", "--seeds", "1",
                                      "--out", str(tmp_path), *_TINY])
    assert result.exit_code == 2
    assert not (tmp_path / "checkpoints").exists()
