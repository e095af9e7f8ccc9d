"""Tests of scaling.fit.laws: formulas, the published start grid, user-defined laws."""

import math

import numpy as np
import pytest

from scaling.errors import UserError
from scaling.fit import laws

MUENNIGHOFF_BASE = {"a": 6.255414, "b": 7.3049974, "e": 0.6254804, "alpha": 0.3526596, "beta": 0.3526596}


def test_chinchilla_matches_its_formula():
  law = laws.get("chinchilla")
  theta = {"a": math.log(406.4), "b": math.log(410.7), "e": math.log(1.69), "alpha": 0.34, "beta": 0.28}
  N, D = np.array([1e8, 7e10]), np.array([2e9, 1.4e12])
  want = 1.69 + 406.4 / N ** 0.34 + 410.7 / D ** 0.28
  np.testing.assert_allclose(law.predict(np, theta, {"N": N, "D": D}), want, rtol=1e-12)
  assert law.public(theta) == pytest.approx({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28})


def test_chinchilla_start_grid_is_the_published_4500():
  starts = laws.get("chinchilla").starts()
  assert starts.shape == (4500, 5)
  for j, values in enumerate([np.arange(0, 26, 5), np.arange(0, 26, 5), np.arange(-1, 1.01, 0.5),
                              np.arange(0, 2.01, 0.5), np.arange(0, 2.01, 0.5)]):
    np.testing.assert_allclose(np.unique(starts[:, j]), values)


def test_fixing_a_parameter_removes_it_from_the_grid():
  law = laws.get("chinchilla")
  assert law.starts({"e": 0.5}).shape == (900, 4)
  assert law.to_theta("E", math.e) == ("e", 1.0)
  with pytest.raises(UserError, match="must be positive"):
    law.to_theta("A", -1.0)


def test_kaplan_laws():
  law = laws.get("kaplan")
  theta = {"log_Nc": math.log(8.8e13), "log_Dc": math.log(5.4e13), "alpha_N": 0.076, "alpha_D": 0.095}
  N, D = 1e9, 1e10
  want = ((8.8e13 / N) ** (0.076 / 0.095) + 5.4e13 / D) ** 0.095
  assert law.predict(np, theta, {"N": N, "D": D}) == pytest.approx(want, rel=1e-12)
  single = laws.get("kaplan_C")
  assert single.predict(np, {"log_Cc": math.log(3.1e8), "alpha_C": 0.05}, {"C": 1e3}) == pytest.approx((3.1e8 / 1e3) ** 0.05)


def test_power_law_with_offset():
  law = laws.get("power")
  theta = {"a": math.log(50.0), "e": math.log(1.5), "alpha": 0.1}
  assert law.predict(np, theta, {"C": 1e20}) == pytest.approx(1.5 + 50.0 * 1e20 ** -0.1)
  assert law.public(theta) == pytest.approx({"E": 1.5, "A": 50.0, "alpha": 0.1})


@pytest.mark.parametrize("N, D, U, want", [(6.34e9, 242e9, 25e9, 2.22564), (8.67e9, 178e9, 25e9, 2.22696)])
def test_muennighoff_spot_checks(N, D, U, want):
  """Published spot checks (tests/data/README.md) at R_D* = 15.387756, R_N* = 5.309743 (the notebook's fit)."""
  law = laws.get("muennighoff")
  theta = {**MUENNIGHOFF_BASE, "R_D": 15.387756, "R_N": 5.309743}
  assert law.predict(np, theta, {"N": N, "D": D, "U": U}) == pytest.approx(want, abs=1e-5)


def test_muennighoff_reduces_to_chinchilla_without_repetition():
  theta = {**MUENNIGHOFF_BASE, "R_D": 15.0, "R_N": 5.0}
  N, D = 1e8, 2e9  # N is below N_opt(U = D), so N' = N; one epoch, so D' = D
  got = laws.get("muennighoff").predict(np, theta, {"N": N, "D": D, "U": D})
  assert got == pytest.approx(laws.get("chinchilla").predict(np, MUENNIGHOFF_BASE, {"N": N, "D": D}), rel=1e-12)


def test_decorator_registers_a_user_law():
  @laws.law("test_offset_power", inputs=("N",), grid={"E": [1.0], "A": [10.0], "alpha": [0.5]})
  def offset_power(xp, N, E, A, alpha):
    return E + A * N ** -alpha

  law = laws.get("test_offset_power")
  assert law.theta == ("E", "A", "alpha")
  assert law.predict(np, {"E": 1.0, "A": 10.0, "alpha": 0.5}, {"N": 100.0}) == pytest.approx(2.0)
  assert law.starts().shape == (1, 3)


def test_expression_law_and_its_errors():
  law = laws.expression_law("test_expr", "E + A * exp(-alpha * log(N))", ["N"], {"E": [1.0], "A": [1.0], "alpha": [1.0]})
  assert law.predict(np, {"E": 1.0, "A": 3.0, "alpha": 1.0}, {"N": 3.0}) == pytest.approx(2.0)
  with pytest.raises(UserError, match="unknown names"):
    laws.expression_law("test_bad", "E + os.system(N)", ["N"], {"E": [1.0]})
  with pytest.raises(UserError, match="not valid Python"):
    laws.expression_law("test_bad2", "E +", ["N"], {"E": [1.0]})
  with pytest.raises(UserError, match="unknown law"):
    laws.get("no_such_law")


def test_public_parameters_of_a_far_out_sample_are_inf_not_an_error():
  """A bootstrap resample can drive ln A past 709 (an unidentified alpha); the fit goes on, its interval says so."""
  law = laws.get("chinchilla")
  public = law.public({"a": 800.0, "b": 3.0, "e": 0.1, "alpha": 40.0, "beta": 0.3})
  assert public["A"] == float("inf") and public["B"] == pytest.approx(math.exp(3.0))
