"""Tests of scaling.fit.varpro: exact coefficients by NNLS, exponents by grid and refinement."""

import pytest

from scaling.errors import UserError
from scaling.fit import laws, synthetic, varpro


def test_varpro_recovers_noise_free_parameters():
  df = synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes=6, noise=0.0)
  fit = varpro.fit(df, laws.get("chinchilla"))
  for k, v in synthetic.EPOCH.items():
    assert fit.params[k] == pytest.approx(v, rel=2e-3)
  assert fit.objective < 1e-10 and fit.solver == "varpro" and fit.best_converged


def test_varpro_power_law_and_errors():
  df = synthetic.isoflop_sweep(budgets=(1e17, 1e18, 1e19, 1e20, 1e21), sizes=2, noise=0.0)
  df = df.assign(loss=1.5 + 40 * df["C"] ** -0.07)
  fit = varpro.fit(df, laws.get("power"))
  assert fit.params["alpha"] == pytest.approx(0.07, rel=1e-4)
  with pytest.raises(UserError, match="--loss=lsq"):
    varpro.fit(df, laws.get("power"), objective="huber_log")
  with pytest.raises(UserError, match="no linear coefficients"):
    varpro.fit(df, laws.get("kaplan"))
