"""Tests of scaling.fit.downstream: Err(L) laws recovered from synthetic pairs, chained with a loss fit, errors."""

import json

import numpy as np
import pandas as pd
import pytest

from scaling.errors import UserError
from scaling.fit import downstream, laws, pipeline, predict, synthetic
from tests.test_fit_predict import fit_record

EXP = {"eps": 0.85, "k": 2.2, "gamma": 0.5}
SIGMOID = {"a": 0.7, "b": 0.25, "k": 4.0, "L0": 1.2}


def test_downstream_laws_match_their_formulas():
  L = np.array([2.0, 3.5])
  th = {"eps": 0.85, "log_k": np.log(2.2), "gamma": 0.5}
  np.testing.assert_allclose(laws.get("downstream_exp").predict(np, th, {"L": L}), 0.85 - 2.2 * np.exp(-0.5 * L))
  th = {"log_a": np.log(0.7), "b": 0.25, "k": 4.0, "L0": 1.2}
  np.testing.assert_allclose(laws.get("downstream_sigmoid").predict(np, th, {"L": L}),
                             0.7 / (1 + np.exp(-4.0 * (L - 1.2))) + 0.25, rtol=1e-12)


@pytest.fixture(scope="module")
def fits():
  exp = downstream.fit(synthetic.downstream_pairs("downstream_exp", EXP, np.linspace(2.5, 4.5, 24), seed=1),
                       {"name": "table"}, pipeline.Options(law="exp", objective="lsq", bootstrap=100))
  sig = downstream.fit(synthetic.downstream_pairs("downstream_sigmoid", SIGMOID, np.linspace(0.6, 2.0, 24), seed=1),
                       {"name": "table"}, pipeline.Options(law="sigmoid", objective="lsq", bootstrap=100))
  return exp, sig


def test_synthetic_recovery_of_both_downstream_laws(fits):
  exp, sig = fits
  assert exp["kind"] == "downstream" and exp["law"] == "downstream_exp"
  for rec, truth, tol in ((exp, EXP, 0.1), (sig, SIGMOID, 0.1)):
    for k, v in truth.items():
      assert rec["params"][k] == pytest.approx(v, rel=tol), (rec["law"], k)
      lo, hi = rec["intervals"][k]
      assert lo < rec["params"][k] < hi


def test_chained_prediction_has_an_interval_from_both_fits(fits):
  exp, _ = fits
  THETA = fit_record()["theta"]
  samples = [[THETA["a"], THETA["b"], THETA["e"] + d, THETA["alpha"], THETA["beta"]] for d in np.linspace(-0.02, 0.02, 9)]
  loss_fit = fit_record(samples)
  point, draws = predict.loss_draws(loss_fit, {"N": 1e9, "D": 2e10})
  out = downstream.chain(exp, point, draws)
  want = EXP["eps"] - EXP["k"] * np.exp(-EXP["gamma"] * point)
  assert out["value"] == pytest.approx(want, abs=0.01)
  lo, hi = out["interval"]
  assert lo < out["value"] < hi
  narrow = downstream.chain(exp, point, np.array([]))  # the downstream fit's own uncertainty only
  assert narrow["interval"][1] - narrow["interval"][0] < hi - lo


def test_bad_downstream_tables():
  with pytest.raises(UserError, match="needs column 'error'"):
    downstream.frame(pd.DataFrame({"loss": [3.0, 2.9]}))
  with pytest.raises(UserError, match="2 or more"):
    downstream.frame(pd.DataFrame({"loss": [3.0], "error": [0.5]}))
  with pytest.raises(UserError, match="choose one of exp, sigmoid"):
    downstream.law_name("linear")
  with pytest.raises(UserError, match="not a downstream fit"):
    downstream.check(fit_record(), "fit.json")


def test_cli_fit_downstream_then_chain(tmp_path):
  from tests.test_fit_cli import scaling
  table = tmp_path / "pairs.csv"
  synthetic.downstream_pairs("downstream_exp", EXP, np.linspace(2.5, 4.5, 16), seed=3).rename(
      columns={"loss": "c4", "error": "top1_err"}).to_csv(table, index=False)
  out = tmp_path / "down.json"
  r = scaling("fit-downstream", table, "--columns", "loss=c4,error=top1_err", "--bootstrap", "20", "--out", out)
  assert r.returncode == 0, r.stderr
  assert "gamma =" in r.stdout and json.loads(out.read_text())["kind"] == "downstream"
  assert ": error from loss" in r.stdout and "convention" not in r.stdout  # no sizes, no counting convention
  loss_fit = tmp_path / "fit.json"
  loss_fit.write_text(json.dumps(fit_record()))
  p = scaling("predict", loss_fit, "--N", "1e9", "--D", "2e10", "--downstream", out)
  assert p.returncode == 0, p.stderr
  assert p.stdout.splitlines()[0].startswith("loss = ") and "error = " in p.stdout and "interval" in p.stdout
  own = scaling("predict", out, "--at", "L=3.0")  # the downstream law alone predicts an error, and says so
  assert own.returncode == 0 and own.stdout.startswith("error = "), own.stdout + own.stderr
  bad = tmp_path / "one.csv"
  pd.DataFrame({"c4": [3.0], "top1_err": [0.6]}).to_csv(bad, index=False)
  r = scaling("fit-downstream", bad, "--columns", "loss=c4,error=top1_err", "--out", tmp_path / "x.json")
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "2 or more" in r.stderr
  r = scaling("fit-downstream", table, "--out", tmp_path / "x.json")
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "needs column 'loss'" in r.stderr
