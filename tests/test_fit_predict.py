"""Tests of scaling.fit.predict: closed-form and searched optima, intervals from bootstrap samples."""

import json
import math

import numpy as np
import pytest

from scaling.errors import UserError
from scaling.fit import laws, predict

THETA = {"a": math.log(406.4), "b": math.log(410.7), "e": math.log(1.69), "alpha": 0.34, "beta": 0.28}


def fit_record(samples=None, law="chinchilla"):
  rec = {"law": law, "approach": 3, "theta": THETA, "params": laws.get("chinchilla").public(THETA),
         "convention": {"flops_per_nd": 6.0}, "level": 0.9}
  if samples is not None:
    rec["bootstrap"] = {"names": list(THETA), "samples": samples}
  return rec


def test_chinchilla_optimum_is_the_minimum_along_the_budget():
  out = predict.optimum_at(fit_record(), 5.76e23)
  n, d = out["N"]["value"], out["D"]["value"]
  assert 6 * n * d == pytest.approx(5.76e23, rel=1e-9)
  law = laws.get("chinchilla")
  loss = lambda n_: law.predict(np, THETA, {"N": n_, "D": 5.76e23 / (6 * n_)})
  assert out["loss"]["value"] == pytest.approx(loss(n))
  assert loss(n) < loss(n * 1.01) and loss(n) < loss(n / 1.01)


def test_numeric_search_agrees_with_the_closed_form():
  rec = fit_record()
  closed = predict.optimum_at(rec, 1e22)
  law = laws.get("chinchilla")
  no_closed_form = laws.Law(**{**law.__dict__, "name": "test_chinchilla_search", "optimum": None})
  laws.register(no_closed_form)
  searched = predict.optimum_at({**rec, "law": "test_chinchilla_search"}, 1e22)
  assert searched["N"]["value"] == pytest.approx(closed["N"]["value"], rel=1e-4)
  assert searched["loss"]["value"] == pytest.approx(closed["loss"]["value"], rel=1e-9)


def test_intervals_come_from_the_bootstrap_samples():
  rng = np.random.default_rng(0)
  samples = [[THETA[k] + rng.normal(0, 0.01) for k in THETA] for _ in range(200)]
  out = predict.loss_at(fit_record(samples), {"N": 1e9, "D": 2e10})
  lo, hi = out["interval"]
  assert lo < out["value"] < hi
  assert "interval" not in predict.loss_at(fit_record(), {"N": 1e9, "D": 2e10})


def test_read_and_input_errors(tmp_path):
  path = tmp_path / "fit.json"
  path.write_text(json.dumps(fit_record()))
  assert predict.read(path)["law"] == "chinchilla"
  (tmp_path / "other.json").write_text("{}")
  with pytest.raises(UserError, match="not a fit.json"):
    predict.read(tmp_path / "other.json")
  with pytest.raises(UserError, match="give --D"):
    predict.loss_at(fit_record(), {"N": 1e9})
  with pytest.raises(UserError, match="law chinchilla predicts from N, D, not U"):  # it was ignored
    predict.loss_at(fit_record(), {"N": 1e9, "D": 1e10, "U": 2.5e10})
  alloc = {"law": "isoflop", "approach": 2, "params": {"a": 0.5, "k_N": 0.1, "b": 0.5, "k_D": 1.0}}
  with pytest.raises(UserError, match="use --compute"):
    predict.loss_at(alloc, {"N": 1e9})
  assert predict.optimum_at(alloc, 1e20)["N"]["value"] == pytest.approx(0.1 * 1e10)
