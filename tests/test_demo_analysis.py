"""The demo's analysis: the prediction it stores and tests, the comparison, the error line."""

import json

import numpy as np
import pytest

from scaling.demo import analysis
from scaling.fit import pipeline, synthetic


@pytest.fixture(scope="module")
def fits():
  """Approach 3 and 2 fits of a synthetic IsoFLOP sweep of the Epoch law (5 budgets x 9 sizes, 0.3% noise)."""
  df = synthetic.isoflop_sweep(noise=0.003, seed=0)
  df["final"] = True
  conv = {"name": "6N", "flops_per_nd": 6.0}
  opts = pipeline.Options(points="final", bootstrap=20, level=0.9)
  fit3 = pipeline.run(df, conv, pipeline.Options(**{**opts.__dict__, "approach": 3}))
  fit2 = pipeline.run(df, conv, pipeline.Options(**{**opts.__dict__, "approach": 2}))
  return fit3, fit2


def test_the_prediction_is_the_law_at_the_trained_shape_with_an_interval(fits):
  fit3, fit2 = fits
  C = 1e21
  N = 1.1 * analysis.predict.optimum_at(fit3, C)["N"]["value"]  # a shape near, not at, N*
  D = int(C / (6 * N))
  p = analysis.predict_target(fit3, fit2, C, "8x1024", N, D, 6 * N)
  truth = synthetic.chinchilla_loss(synthetic.EPOCH, np.float64(N), np.float64(D))
  assert p["loss"]["value"] == pytest.approx(truth, rel=5e-3)  # the law is recovered
  lo, hi = p["loss"]["interval"]
  assert lo <= p["loss"]["value"] <= hi
  assert p["approach3"]["loss"]["value"] <= p["loss"]["value"] + 1e-9  # off the optimum costs loss
  assert p["approach2"]["N"]["value"] == pytest.approx(p["approach3"]["N"]["value"], rel=0.15)
  assert p["target"] == {"shape": "8x1024", "N": N, "D": D, "flops_per_token": 6 * N, "C": 6 * N * D}
  assert p["level"] == 0.9 and sorted(p["sweep_runs"]) == sorted(fit3["runs"])
  json.dumps(p)  # stored as JSON before the target run starts


def test_comparison_and_the_last_line():
  p = {"loss": {"value": 1.50, "interval": [1.45, 1.56]}}
  cmp = analysis.comparison(p, 1.52)
  assert cmp["relative_error"] == pytest.approx(-0.02 / 1.52) and cmp["inside"]
  assert analysis.error_line(cmp, 0.9) == ("prediction error -1.32% (predicted 1.5000, 90% interval [1.4500, 1.5600]; "
                                           "measured 1.5200, inside the interval)")
  outside = analysis.comparison(p, 1.40)
  assert not outside["inside"] and "OUTSIDE" in analysis.error_line(outside, 0.9)
  bare = analysis.comparison({"loss": {"value": 1.5}}, 1.5)
  assert analysis.error_line(bare, 0.9) == "prediction error +0.00% (predicted 1.5000; measured 1.5000)"


def test_a_stored_prediction_is_reused_only_for_the_same_sweep_runs(tmp_path):
  analysis.write_prediction(tmp_path, {"loss": {"value": 1.0}, "sweep_runs": ["a", "b"]})
  assert analysis.read_prediction(tmp_path, {"a", "b"})["loss"]["value"] == 1.0
  assert analysis.read_prediction(tmp_path, {"a", "b", "c"}) is None  # the sweep changed: predict again
  assert analysis.read_prediction(tmp_path / "elsewhere", {"a"}) is None
