"""Variable projection: for each set of exponents, the linear coefficients by non-negative least squares.

For a law that is a sum of non-negative terms c_k * prod(x^-exponent) (chinchilla: E, A N^-alpha,
B D^-beta; the power laws), the coefficients (E, A, B) are solved exactly by NNLS for every exponent
pair on a grid, and the exponents are then refined by Nelder-Mead on that profile. This removes the
nearly flat A/B directions from the search. The objective is least squares on the losses (`lsq`).
"""

from __future__ import annotations

import itertools
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.optimize import minimize, nnls

from scaling.errors import UserError
from scaling.fit import laws, parametric

GRID = np.linspace(0.0, 2.5, 101)
TINY = 1e-300


def _structure(law: laws.Law) -> tuple[list[str], list[str], list[list[tuple[str, str]]]]:
  """(coefficient params, exponent params, per term its (exponent param, column) factors)."""
  coefs, exps, factors = [], [], []
  for term in law.lse_terms:
    coef = [p for p, c, _ in term if c is None]
    fac = [(p, c) for p, c, s in term if c is not None]
    if len(coef) != 1 or any(s != -1.0 for _, c, s in term if c is not None):
      raise UserError(f"--solver=varpro: law {law.name} is not a sum of c * x^-exponent terms")
    coefs.append(coef[0])
    factors.append(fac)
    exps.extend(p for p, _ in fac if p not in exps)
  return coefs, exps, factors


def _design(e: np.ndarray, exps: list[str], factors: list[list[tuple[str, str]]],
            logcols: Mapping[str, np.ndarray]) -> np.ndarray:
  n = len(next(iter(logcols.values())))
  X = np.ones((n, len(factors)))
  for k, fac in enumerate(factors):
    for p, c in fac:
      X[:, k] *= np.exp(-e[exps.index(p)] * logcols[c])
  return X


def fit(df: pd.DataFrame, law: laws.Law, *, objective: str = "lsq",
        fixed: Mapping[str, float] | None = None) -> parametric.ParametricFit:
  """Least-squares fit of an LSE-linear law by variable projection (grid over exponents, then refinement)."""
  if law.lse_terms is None:
    raise UserError(f"--solver=varpro: law {law.name} has no linear coefficients to project out; use --solver=lbfgs")
  if objective != "lsq":
    raise UserError(f"--solver=varpro minimises least squares on the losses: use --loss=lsq (not {objective})")
  if fixed:
    raise UserError("--solver=varpro does not take --fix; use --solver=lbfgs")
  coefs, exps, factors = _structure(law)
  parametric.check_size(len(df), len(coefs) + len(exps), f"law {law.name}")
  cols = parametric.columns(df, law)
  logcols = {c: np.log(v) for c, v in cols.items()}
  y = df["loss"].to_numpy(np.float64)

  def profile(e: np.ndarray) -> tuple[float, np.ndarray]:
    c, rnorm = nnls(_design(e, exps, factors, logcols), y)
    return rnorm ** 2, c

  grid = np.array(list(itertools.product(GRID, repeat=len(exps))))
  values = np.array([profile(e)[0] for e in grid])
  start = grid[int(np.argmin(values))]
  res = minimize(lambda e: profile(e)[0], start, method="Nelder-Mead",
                 options={"xatol": 1e-10, "fatol": 1e-16, "maxiter": 20000})
  e = res.x if res.fun <= values.min() else start
  sse, c = profile(e)
  theta = {**{p: float(np.log(max(ck, TINY))) for p, ck in zip(coefs, c)}, **{p: float(v) for p, v in zip(exps, e)}}
  warnings = [f"coefficient {p} is 0 (sits on its bound)" for p, ck in zip(coefs, c) if ck <= 0]
  if not res.success:
    warnings.append(f"the exponent refinement did not converge ({res.message})")
  x = np.array([[theta[p] for p in law.theta]])
  return parametric.ParametricFit(
      law=law, objective_name="lsq", delta=0.0, theta=theta, fixed={}, objective=float(sse), n_points=len(df),
      n_starts=len(grid), starts_converged=int(res.success), best_converged=bool(res.success),
      best_status=str(res.message), best_iterations=int(res.nit), warnings=warnings, optima=x, solver="varpro")
