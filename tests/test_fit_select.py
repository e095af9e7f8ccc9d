"""Tests of scaling.fit.select (`--law=auto`): the backtest table and the choice, on Li et al. 2025 checkpoints."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling import cli
from scaling.errors import UserError
from scaling.fit import load, pipeline, select

DATA = Path(__file__).parent / "data" / "misfitting2025_last_ckpt_only.csv"
HOLDOUT = "N>=5e8"  # fit on the models below 500M parameters, predict the final losses of the larger ones


@pytest.fixture(scope="module")
def misfitting():
  df, conv = load.load([str(DATA)], load.parse_columns("run=model+total_steps+peak_lr"))
  return df, conv


@pytest.fixture(scope="module")
def chosen(misfitting):
  df, conv = misfitting
  return select.choose(df, conv, pipeline.Options(law="auto", holdout=HOLDOUT))


def test_candidates_follow_the_columns(misfitting):
  df, _ = misfitting
  assert select.applicable(df) == ["chinchilla", "kaplan", "overtraining"]  # no U: no muennighoff
  assert "muennighoff" in select.applicable(df.assign(U=df["D"] / 2))


def test_auto_keeps_the_law_with_the_lowest_held_out_error(chosen):
  table = chosen["law_selection"]["laws"]
  errors = {r["law"]: r["mean_abs_relative_error"] for r in table}
  print("held-out mean |relative error|:", {k: f"{v:.4%}" for k, v in errors.items()})
  assert {"chinchilla", "overtraining"} <= set(errors)
  best = min(errors, key=errors.get)
  assert chosen["law"] == chosen["law_selection"]["chosen"] == best
  assert chosen["holdout"]["mean_abs_relative_error"] == pytest.approx(errors[best])
  held = {r["run"] for r in table[0]["held_out"]}
  assert len(held) == 17 and all("400m" in r or "1b" in r for r in held)


def test_the_table_has_parameters_errors_per_run_and_aic(chosen):
  for row in chosen["law_selection"]["laws"]:
    assert row["params"] and np.isfinite(row["aic"]) and row["n_points"] == 244
    assert len(row["held_out"]) == 17
  text = select.table(chosen["law_selection"])
  assert "chosen" in text and "overtraining" in text and "AIC" in text


def test_aic_penalises_parameters():
  train = pd.DataFrame({"N": [1e8, 2e8], "D": [1e9, 2e9], "loss": [3.0, 2.9]})
  fit_ = {"law": "chinchilla", "theta": {"a": 5.0, "b": 5.0, "e": 1.0, "alpha": 0.3, "beta": 0.3}, "fixed": {}}
  fixed = {**fit_, "fixed": {"e": 1.0}}
  assert select.aic(fit_, train) - select.aic(fixed, train) == pytest.approx(2.0)


@pytest.mark.parametrize("opts, message", [
    (pipeline.Options(law="auto"), "give --holdout"), (pipeline.Options(law="auto", holdout="largest", approach=2), "--approach=3"),
    (pipeline.Options(law="auto", holdout="largest", fix={"E": 1.0}), "does not take --fix"),
])
def test_auto_option_errors(misfitting, opts, message):
  df, conv = misfitting
  with pytest.raises(UserError, match=message):
    select.choose(df, conv, opts)


def test_cli_law_auto_prints_the_table_and_records_it(chosen, capsys, tmp_path):
  out = tmp_path / "fit.json"
  code = cli.main(["fit", str(DATA), "--columns", "run=model+total_steps+peak_lr", "--law", "auto", "--holdout", HOLDOUT,
                   "--out", str(out)])
  printed = capsys.readouterr().out
  assert code == 0
  assert f"chosen {chosen['law']}" in printed and "mean |rel err|" in printed and "held-out run" in printed
  assert json.loads(out.read_text())["law_selection"]["chosen"] == chosen["law"]
