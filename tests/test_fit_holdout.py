"""Tests of scaling.fit.holdout: which runs a spec holds out, and the backtest record."""

import pytest

from scaling.errors import UserError
from scaling.fit import holdout, pipeline, synthetic


@pytest.fixture(scope="module")
def sweep():
  return synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes=5, noise=0.005, seed=4)


def test_specs_select_runs(sweep):
  largest = holdout.held_out_runs(sweep, "largest")
  assert set(sweep[sweep["C"] == 1e20]["run"]) == largest
  assert holdout.held_out_runs(sweep, "C>5e19") == largest
  assert holdout.held_out_runs(sweep, "run=run0,run3") == {"run0", "run3"}
  train, test = holdout.split(sweep, "N>=1e9")
  assert (test["N"] >= 1e9).all() and (train["N"] < 1e9).all()


@pytest.mark.parametrize("spec, message", [("C>>3", "use largest"), ("Q>1", "no column 'Q'"),
                                           ("run=nope", "no run 'nope'"), ("C>1e30", "selects no run"),
                                           ("C>0", "selects every run")])
def test_bad_specs(sweep, spec, message):
  with pytest.raises(UserError, match=message):
    holdout.split(sweep, spec)


def test_backtest_reports_error_and_coverage(sweep):
  rec = pipeline.run(sweep, {"name": "synthetic"}, pipeline.Options(bootstrap=40, holdout="largest"))
  rows = rec["holdout"]["predictions"]
  assert len(rows) == 5
  for r in rows:
    assert abs(r["relative_error"]) < 0.03
    assert r["relative_error"] == pytest.approx((r["predicted"] - r["truth"]) / r["truth"])
    assert r["inside"] == (r["interval"][0] <= r["truth"] <= r["interval"][1])
  assert rec["n_points"] == 10
