"""Tests of scaling.fit.pipeline: the fit.json record of each approach, with bootstrap and backtest."""

import json

import numpy as np
import pytest

from scaling.errors import UserError
from scaling.fit import pipeline, synthetic

CONV = {"name": "synthetic", "N": "N", "C": "6ND", "flops_per_nd": 6.0}


@pytest.fixture(scope="module")
def sweep():
  return synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20, 1e21), sizes=7, noise=0.005, seed=11)


def test_approach3_record_has_the_contract_keys(sweep):
  rec = pipeline.run(sweep, CONV, pipeline.Options(bootstrap=30, seed=2))
  for key in ("law", "approach", "params", "intervals", "objective", "n_points", "starts_converged", "convention"):
    assert key in rec
  assert set(rec["params"]) == {"E", "A", "B", "alpha", "beta"}
  assert rec["derived"]["a"] == pytest.approx(rec["params"]["beta"] / (rec["params"]["alpha"] + rec["params"]["beta"]))
  assert set(rec["intervals"]) >= {"E", "A", "B", "alpha", "beta", "derived.a", "derived.b"}
  assert rec["bootstrap"]["unit"] == "run" and len(rec["bootstrap"]["samples"]) == 30
  json.dumps(rec)  # the record is JSON-ready


def test_approach2_and_holdout_of_the_largest_budget(sweep):
  rec = pipeline.run(sweep, CONV, pipeline.Options(approach=2, bootstrap=20, holdout="largest"))
  truth = synthetic.EPOCH
  assert rec["params"]["a"] == pytest.approx(truth["beta"] / (truth["alpha"] + truth["beta"]), abs=0.05)
  assert rec["holdout"]["runs"] and len(rec["holdout"]["predictions"]) == 1
  assert abs(rec["holdout"]["predictions"][0]["relative_error"]) < 0.03
  assert {"a", "k_N", "b", "k_D", "E", "A", "alpha"} <= set(rec["intervals"])


def test_approach1_on_learning_curves():
  rec = pipeline.run(synthetic.learning_curves(noise=0.002), CONV, pipeline.Options(approach=1))
  assert rec["points"] == "all" and 0.2 < rec["params"]["a"] < 1.0
  assert rec["loss_law"]["law"] == "power"


def test_bad_options_are_user_errors(sweep):
  with pytest.raises(UserError, match="--approach=4"):
    pipeline.run(sweep, CONV, pipeline.Options(approach=4))
  with pytest.raises(UserError, match="--solver=newton"):
    pipeline.run(sweep, CONV, pipeline.Options(solver="newton"))
