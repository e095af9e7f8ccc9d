"""Tests of the over-training law (Gadre et al. 2024): formula, synthetic recovery, intervals, predictions."""

import math

import numpy as np
import pytest

from scaling.fit import bootstrap, laws, parametric, pipeline, predict, synthetic


def test_overtraining_matches_its_formula():
  law = laws.get("overtraining")
  theta = {"log_a": math.log(200.0), "log_b": math.log(1200.0), "e": math.log(1.9), "eta": 0.16}
  N, D = np.array([1e8, 1e9]), np.array([2e9, 1e11])
  C, M = 6 * N * D, D / N
  want = 1.9 + (200.0 * M ** 0.16 + 1200.0 * M ** -0.16) * C ** -0.16
  np.testing.assert_allclose(law.predict(np, theta, {"N": N, "D": D, "C": C}), want, rtol=1e-12)
  assert law.public(theta) == pytest.approx({"E": 1.9, "a": 200.0, "b": 1200.0, "eta": 0.16})
  assert law.to_theta("a", math.e) == ("log_a", 1.0)


@pytest.fixture(scope="module")
def fitted():
  df = synthetic.overtraining_sweep(noise=0.003, seed=2)
  rec = pipeline.run(df, {"name": "synthetic", "flops_per_nd": 6.0}, pipeline.Options(law="overtraining", bootstrap=200))
  return df, rec


def test_synthetic_recovery_of_the_overtraining_law(fitted):
  _, rec = fitted
  truth = synthetic.GADRE
  assert rec["params"]["eta"] == pytest.approx(truth["eta"], rel=0.05)
  assert rec["params"]["E"] == pytest.approx(truth["E"], rel=0.03)
  assert rec["best_start"]["converged"] and not rec["warnings"]


def test_bootstrap_intervals_cover_the_truth(fitted):
  _, rec = fitted
  for name in ("E", "eta"):
    lo, hi = rec["intervals"][name]
    assert lo < synthetic.GADRE[name] < hi, name
  assert len(rec["bootstrap"]["samples"]) == 200 and rec["bootstrap"]["unit"] == "run"


def test_predictions_derive_C_and_search_the_optimum(fitted):
  _, rec = fitted
  p = synthetic.GADRE
  want = synthetic.overtraining_loss(p, np.array([3e9]), np.array([6e10]), np.array([6 * 3e9 * 6e10]))[0]
  out = predict.loss_at(rec, {"N": 3e9, "D": 6e10})
  assert out["value"] == pytest.approx(want, rel=0.01)
  assert out["interval"][0] < out["value"] < out["interval"][1]
  opt = predict.optimum_at(rec, 1e22)
  assert 6 * opt["N"]["value"] * opt["D"]["value"] == pytest.approx(1e22, rel=1e-6)
  law = laws.get("overtraining")
  along = lambda n: law.predict(np, rec["theta"], {"N": n, "D": 1e22 / (6 * n), "C": 1e22})
  assert along(opt["N"]["value"]) <= min(along(opt["N"]["value"] * 1.05), along(opt["N"]["value"] / 1.05))
  assert "interval" in opt["loss"]
