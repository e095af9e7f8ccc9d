"""Tests of scaling.fit.gin_laws: a user-defined law bound in gin and fitted."""

import pytest

from scaling.errors import UserError
from scaling.fit import gin_laws, laws, parametric, synthetic


def test_gin_file_defines_a_law_that_fits(tmp_path):
  path = tmp_path / "law.gin"
  path.write_text("fit_law.name = 'gin_offset_power'\n"
                  "fit_law.expression = 'E + A * C ** -alpha'\n"
                  "fit_law.inputs = ['C']\n"
                  "fit_law.grid = {'E': [1.0, 2.0], 'A': [10.0, 100.0], 'alpha': [0.05, 0.1, 0.2]}\n"
                  "fit_law.lower = {'E': 0.0, 'A': 0.0, 'alpha': 0.0}\n")
  law = gin_laws.register([str(path)], [])
  assert law is laws.get("gin_offset_power")
  df = synthetic.isoflop_sweep(budgets=(1e17, 1e18, 1e19, 1e20, 1e21), sizes=2, noise=0.0)
  df = df.assign(loss=1.5 + 40 * df["C"] ** -0.07)
  fit = parametric.fit(df, law, objective="lsq_log")
  assert fit.params["alpha"] == pytest.approx(0.07, rel=1e-3)


def test_gin_errors_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="gin"):
    gin_laws.register([str(tmp_path / "missing.gin")], [])
