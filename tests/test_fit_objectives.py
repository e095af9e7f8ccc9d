"""Tests of scaling.fit.objectives: Huber and squared scores on log or plain residuals."""

import numpy as np
import pytest

from scaling.errors import UserError
from scaling.fit import objectives


def test_huber_is_quadratic_inside_and_linear_outside():
  r = np.array([0.0, 5e-4, -1e-3, 3e-3, -1.0])
  want = [0.0, 0.5 * 25e-8, 0.5e-6, 1e-3 * (3e-3 - 5e-4), 1e-3 * (1.0 - 5e-4)]
  np.testing.assert_allclose(objectives.huber(np, r, 1e-3), want, rtol=1e-12)


def test_residuals_on_logs_or_losses():
  lp, lo = np.log(np.array([2.0, 3.0])), np.log(np.array([2.5, 3.0]))
  np.testing.assert_allclose(objectives.residuals(np, "huber_log", lp, lo), lp - lo)
  np.testing.assert_allclose(objectives.residuals(np, "lsq", lp, lo), [-0.5, 0.0], atol=1e-12)
  assert objectives.score(np, "lsq_log", np.array(0.1), 1e-3) == pytest.approx(0.01)


def test_unknown_objective_is_a_user_error():
  assert objectives.check("lsq") == "lsq"
  with pytest.raises(UserError, match="huber_log"):
    objectives.check("mae")
