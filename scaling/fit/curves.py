"""The schedule-aware learning-curve law of Tissue et al. 2024 ("Scaling Law with Learning Rate Annealing").

L(s) = L0 + A * S1(s)^-alpha - C * S2(s), with S1(s) = sum_{i<=s} eta_i the forward area (summed learning
rate) and S2(s) = sum_{i<=s} m_i the annealing area with momentum, m_i = lambda * m_{i-1} + (eta_{i-1} - eta_i)
(lambda = 0.999 by default, held fixed). The initial rise of the learning rate (warmup) counts in S1 but not
in S2, so warmup does not look like negative annealing. `momentum_init` is m_0 (0 in the paper; the
reproduction code behind the published 100M fits uses m_0 = eta_0).

A learning curve is a `Curve`: its loss at some steps and its learning rate at every integer step. The fit
minimises the summed Huber (delta 1e-3) of log residuals over every point of every curve (the published
protocol) by L-BFGS-B from starts found by variable projection (L0, A, C by weighted least squares for each
alpha on a grid). Four parameters and a few thousand points need no JAX: one fit takes milliseconds, so
bootstrap refits are cheap. Intervals: by curve with 2+ curves, else a moving-block bootstrap of the log
residuals of the one curve.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from scipy import optimize, signal

from scaling.errors import UserError

NAME = "tissue"
ALIASES = ("tissue", "lr_annealing")
FORMULA = "L(s) = L0 + A * S1^-alpha - C * S2"
PARAMS = ("L0", "A", "alpha", "C")
LAMBDA = 0.999
OBJECTIVES = ("huber_log", "lsq_log", "huber", "lsq")
MIN_POINTS = 8
LOWER = np.array([0.0, 0.0, 0.0, 0.0])
UPPER = np.array([np.inf, np.inf, 10.0, np.inf])
ALPHA_GRID = np.geomspace(0.02, 4.0, 60)


@dataclasses.dataclass
class Curve:
  """One learning curve: observed `loss` at record `steps`, and the learning rate `eta` at every step of `grid`."""

  id: str
  steps: np.ndarray
  loss: np.ndarray
  grid: np.ndarray
  eta: np.ndarray
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def rise_end(eta: np.ndarray) -> int:
  """Index of the end of the initial non-decreasing stretch of the schedule (the peak after warmup)."""
  falls = np.flatnonzero(np.diff(eta) < 0)
  return int(falls[0]) if len(falls) else len(eta) - 1


def areas(eta: np.ndarray, lam: float = LAMBDA, momentum_init: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
  """(S1, S2) at every step of a per-step schedule; the initial LR rise is left out of S2."""
  eta = np.asarray(eta, np.float64)
  drop = np.concatenate([[momentum_init], eta[:-1] - eta[1:]])
  drop[1:rise_end(eta) + 1] = 0.0
  m = signal.lfilter([1.0], [1.0, -lam], drop)
  return np.cumsum(eta), np.cumsum(m)


def features(curve: Curve, lam: float = LAMBDA, momentum_init: str = "zero") -> tuple[np.ndarray, np.ndarray]:
  """(S1, S2) at the curve's record steps; `momentum_init` is 'zero' (m_0 = 0) or 'first_lr' (m_0 = eta_0)."""
  m0 = curve.eta[0] if momentum_init == "first_lr" else 0.0
  s1, s2 = areas(curve.eta, lam, m0)
  idx = np.searchsorted(curve.grid, curve.steps)
  return s1[idx], s2[idx]


def predict(theta: Sequence[float], s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
  """The law at areas (S1, S2) for theta = (L0, A, alpha, C)."""
  L0, A, alpha, C = theta
  with np.errstate(divide="ignore", over="ignore"):
    return L0 + A * np.power(s1, -alpha) - C * s2


def _residual(pred: np.ndarray, y: np.ndarray, objective: str) -> tuple[np.ndarray, np.ndarray]:
  """Residuals and their derivative with respect to the prediction."""
  if objective.endswith("_log"):
    return np.log(pred) - np.log(y), 1.0 / pred
  return pred - y, np.ones_like(pred)


def _rho(r: np.ndarray, objective: str, delta: float) -> tuple[np.ndarray, np.ndarray]:
  """Per-point loss and its derivative in the residual."""
  if objective.startswith("huber"):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * a - 0.5 * delta * delta), np.clip(r, -delta, delta)
  return 0.5 * r * r, r


def objective_and_grad(theta: np.ndarray, s1: np.ndarray, s2: np.ndarray, y: np.ndarray, w: np.ndarray,
                       objective: str = "huber_log", delta: float = 1e-3) -> tuple[float, np.ndarray]:
  """Weighted sum of the per-point loss and its gradient in (L0, A, alpha, C); inf where a prediction is <= 0."""
  L0, A, alpha, C = theta
  x = np.power(s1, -alpha)
  pred = L0 + A * x - C * s2
  if not np.all(np.isfinite(pred)) or (objective.endswith("_log") and np.any(pred <= 0)):
    return np.inf, np.zeros(4)
  r, dr = _residual(pred, y, objective)
  f, df = _rho(r, objective, delta)
  g = w * df * dr
  jac = np.stack([np.ones_like(x), x, -A * x * np.log(s1), -s2])
  return float(np.sum(w * f)), jac @ g


def _projection_starts(s1: np.ndarray, s2: np.ndarray, y: np.ndarray, n: int = 4) -> list[np.ndarray]:
  """Starts from variable projection: for each alpha on a grid, (L0, A, C) by least squares weighted 1/y."""
  scored = []
  for alpha in ALPHA_GRID:
    X = np.stack([np.ones_like(y), np.power(s1, -alpha), -s2], axis=1) / y[:, None]
    coef, *_ = np.linalg.lstsq(X, np.ones_like(y), rcond=None)
    theta = np.array([coef[0], coef[1], alpha, coef[2]])
    theta = np.clip(theta, LOWER, UPPER)
    resid = predict(theta, s1, s2) / y - 1
    scored.append((float(np.sum(resid * resid)), theta))
  scored.sort(key=lambda t: t[0])
  return [t for _, t in scored[:n]]


@dataclasses.dataclass
class Solution:
  """The best optimum of a fit and how the search went."""

  theta: np.ndarray
  objective: float
  converged: bool
  n_starts: int
  starts_converged: int
  message: str


def minimise(s1: np.ndarray, s2: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, *,
             objective: str = "huber_log", delta: float = 1e-3, fixed: dict[int, float] | None = None,
             starts: Sequence[np.ndarray] | None = None) -> Solution:
  """Minimises the objective by L-BFGS-B (parameters scaled by their start) from every start; keeps the best."""
  w = np.ones_like(y) if w is None else w
  fixed = fixed or {}
  free = [i for i in range(4) if i not in fixed]
  starts = list(starts) if starts is not None else _projection_starts(s1, s2, y)
  best, n_conv = None, 0
  for x0 in starts:
    x0 = np.array(x0, np.float64)
    for i, v in fixed.items():
      x0[i] = v
    scale = np.where(np.abs(x0[free]) > 0, np.abs(x0[free]), 1.0)
    fun = _scaled(x0, free, scale, s1, s2, y, w, objective, delta)
    bounds = list(zip(LOWER[free] / scale, UPPER[free] / scale))
    z0 = np.clip(x0[free] / scale, [b[0] for b in bounds], [b[1] for b in bounds])
    if not np.isfinite(fun(z0)[0]):
      continue
    res = optimize.minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 20000, "ftol": 1e-13, "gtol": 1e-10, "maxcor": 20})
    theta = x0.copy()
    theta[free] = res.x * scale
    n_conv += bool(res.success)
    if best is None or res.fun < best.objective:
      best = Solution(theta, float(res.fun), bool(res.success), 0, 0, str(res.message))
  if best is None:
    raise UserError("the curve law cannot be evaluated at any start (predicted losses <= 0): check the lr and loss columns")
  best.n_starts, best.starts_converged = len(starts), n_conv
  return best


def _scaled(x0: np.ndarray, free: list[int], scale: np.ndarray, s1: np.ndarray, s2: np.ndarray, y: np.ndarray,
            w: np.ndarray, objective: str, delta: float) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
  """The objective as a function of the scaled free parameters z = theta[free] / scale."""

  def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
    theta = x0.copy()
    theta[free] = z * scale
    f, g = objective_and_grad(theta, s1, s2, y, w, objective, delta)
    return f, g[free] * scale

  return fun
