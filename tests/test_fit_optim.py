"""Tests of scaling.fit.optim: the batched L-BFGS against known optima, bounds and mixed precision."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

from scaling.fit import optim


def _rosenbrock(x, data, w):
  return w * jnp.sum(data["scale"] * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def _quadratic(x, data, w):
  return jnp.sum(w * (x - data["target"]) ** 2)


def test_batched_lbfgs_finds_the_rosenbrock_minimum_from_every_start():
  starts = np.random.default_rng(0).uniform(-2, 2, size=(40, 2))  # 2-D: the only minimum is (1, 1)
  with optim.x64():
    res = optim.minimize(optim.autodiff(_rosenbrock), starts, {"scale": np.float64(100.0)})
  assert res.converged.all()
  np.testing.assert_allclose(res.x, 1.0, atol=1e-3)
  ref = scipy_minimize(lambda x: float(_rosenbrock(jnp.asarray(x), {"scale": 100.0}, 1.0)), starts[0], method="L-BFGS-B")
  assert res.fun[0] <= ref.fun + 1e-8


def test_bounds_are_respected_and_reported_by_projected_gradient():
  with optim.x64():
    res = optim.minimize(optim.autodiff(_quadratic), np.zeros((3, 2)), {"target": np.array([2.0, -3.0])},
                         lower=np.array([-np.inf, -1.0]), upper=np.array([1.0, np.inf]))
  np.testing.assert_allclose(res.x, [[1.0, -1.0]] * 3, atol=1e-9)
  assert res.converged.all()


def test_per_problem_data_and_weights():
  targets = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
  weights = np.array([[1.0, 1.0], [2.0, 0.5], [1.0, 3.0]])
  with optim.x64():
    res = optim.minimize(optim.autodiff(_quadratic, True, True), np.zeros((3, 2)), {"target": targets}, weights,
                         per_problem_data=True)
  np.testing.assert_allclose(res.x, targets, atol=1e-7)


def test_non_finite_start_is_reported_not_fatal():
  with optim.x64():
    res = optim.minimize(optim.autodiff(lambda x, d, w: jnp.sum(jnp.log(x) ** 2)), np.array([[-1.0], [2.0]]), {})
  assert res.status[0] == 5 and not res.converged[0]
  assert res.converged[1] and res.x[1, 0] == pytest.approx(1.0, abs=1e-4)


def test_mixed_precision_reaches_the_float64_optimum():
  starts = np.random.default_rng(1).uniform(-2, 2, size=(64, 2))
  with optim.x64():
    mixed = optim.minimize_mixed(optim.autodiff(_rosenbrock), starts, {"scale": np.float64(100.0)})
  best = np.argmin(np.where(mixed.final, mixed.fun, np.inf))
  assert mixed.final.sum() >= 1
  np.testing.assert_allclose(mixed.x[best], 1.0, atol=1e-6)
