"""Approach 3: fit a parametric law L(N, D, ...) to every point by batched L-BFGS from a grid of starts.

The default is exactly the published Hoffmann et al. / Epoch protocol for `chinchilla`: the LSE form, the
SUM of Huber(delta = 1e-3) over log residuals, one L-BFGS from every one of the 4,500 grid starts, and the
best optimum kept. Other objectives (`lsq_log`, `huber`, `lsq`) and the variable-projection solver
(`varpro.py`) are options. Every fit says how many starts converged and warns when the best start did not
converge or sits on a bound.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from scaling.errors import UserError
from scaling.fit import laws, load, objectives

TOP_OPTIMA = 8


@dataclasses.dataclass
class ParametricFit:
  """Result of an approach-3 fit: the best parameters and how the multi-start search went."""

  law: laws.Law
  objective_name: str
  delta: float
  theta: dict[str, float]
  fixed: dict[str, float]
  objective: float
  n_points: int
  n_starts: int
  starts_converged: int
  best_converged: bool
  best_status: str
  best_iterations: int
  warnings: list[str]
  optima: np.ndarray  # distinct local optima over the free parameters, best first
  solver: str = "lbfgs"

  @property
  def params(self) -> dict[str, float]:
    """Published parameters (E, A, B, alpha, beta, ...) of the best fit."""
    return self.law.public(self.theta)

  @property
  def free(self) -> list[str]:
    """Names of the fitted (not fixed) fit-space parameters."""
    return [p for p in self.law.theta if p not in self.fixed]


def columns(df: pd.DataFrame, law: laws.Law) -> dict[str, np.ndarray]:
  """The law's input columns of `df` as float arrays, or a UserError naming the missing ones."""
  missing = [c for c in law.inputs if c not in df.columns]
  if missing:
    raise UserError(f"{load.input_name(df)}: law {law.name} needs column(s) {', '.join(missing)}; it has "
                    f"{', '.join(load.input_columns(df))} (map them with --columns NAME=column)")
  return {c: df[c].to_numpy(np.float64) for c in law.inputs}


@functools.lru_cache(maxsize=None)
def objective_fn(law: laws.Law, objective: str, delta: float, free: tuple[str, ...], fixed: tuple[str, ...]) -> Any:
  """The jax objective `fun(x, data, w)` of a law over its free parameters (memoised: one jit per law)."""
  import jax.numpy as jnp

  def fun(x: Any, data: Mapping[str, Any], w: Any) -> Any:
    theta = {n: x[i] for i, n in enumerate(free)}
    theta.update({n: data["fixed"][i] for i, n in enumerate(fixed)})
    r = objectives.residuals(jnp, objective, law.log_predict(jnp, theta, data["cols"]), data["log_loss"])
    return jnp.sum(w * objectives.score(jnp, objective, r, delta))

  return fun


@functools.lru_cache(maxsize=None)
def value_and_grad_fn(law: laws.Law, objective: str, delta: float, free: tuple[str, ...], fixed: tuple[str, ...],
                      per_problem: bool = False, per_problem_weights: bool = False) -> Any:
  """Batched `vg(X, data, w) -> (f, g)`: hand-written for LSE-linear laws, else autodiff of `objective_fn`."""
  from scaling.fit import optim

  if law.lse_terms is None:
    return optim.autodiff(objective_fn(law, objective, delta, free, fixed), per_problem, per_problem_weights)
  import jax.numpy as jnp

  pos = {p: i for i, p in enumerate(law.theta)}
  logcols = lse_columns(law)

  def vg(X: Any, data: Mapping[str, Any], w: Any) -> tuple[Any, Any]:
    S = X.shape[0]
    theta = jnp.zeros((S, len(law.theta)), X.dtype).at[:, [pos[p] for p in free]].set(X)
    theta = theta.at[:, [pos[p] for p in fixed]].set(jnp.broadcast_to(data["fixed"], (S, len(fixed))))
    lc = data["logcols"]  # (columns, n), or (S, columns, n) per problem

    def col(c: str) -> Any:
      return lc[logcols.index(c)] if lc.ndim == 2 else lc[:, logcols.index(c)]

    terms = []
    for term in law.lse_terms:
      t = 0.0
      for param, c, sign in term:
        t = t + sign * theta[:, pos[param], None] * (col(c) if c else 1.0)
      terms.append(jnp.broadcast_to(t, (S, lc.shape[-1])))
    m = functools.reduce(jnp.maximum, terms)
    ex = [jnp.exp(t - m) for t in terms]
    tot = functools.reduce(jnp.add, ex)
    log_pred = m + jnp.log(tot)
    r = objectives.residuals(jnp, objective, log_pred, data["log_loss"])
    dr = 1.0 if objective.endswith("_log") else jnp.exp(log_pred)
    slope = jnp.clip(r, -delta, delta) if objective.startswith("huber") else 2.0 * r
    q = w * slope * dr / tot
    grads = {p: 0.0 for p in free}
    for term, e in zip(law.lse_terms, ex):
      qe = q * e
      for param, c, sign in term:
        if param in grads:
          grads[param] = grads[param] + sign * (jnp.sum(qe, axis=-1) if not c else
                                                 qe @ col(c) if lc.ndim == 2 else jnp.sum(qe * col(c), axis=-1))
    return jnp.sum(w * objectives.score(jnp, objective, r, delta), axis=-1), jnp.stack([grads[p] for p in free], -1)

  return vg


def lse_columns(law: laws.Law) -> list[str]:
  """Input columns whose logs appear in the LSE terms of an LSE-linear law, in a fixed order."""
  return sorted({c for term in law.lse_terms for _, c, _ in term if c})


def padded_size(n: int) -> int:
  """Row count the data is padded to (a power of two, at least 16) so that fits share compiled programs."""
  return max(16, 1 << (n - 1).bit_length())


def problem_data(df: pd.DataFrame, law: laws.Law, fixed: Mapping[str, float]) -> dict[str, Any]:
  """The arrays an objective reads: input columns (or LSE features), log losses, fixed parameter values.

  Rows are padded (copies of the first row) to `padded_size`; `pad_weights` gives them weight zero.
  """
  cols = columns(df, law)
  idx = np.concatenate([np.arange(len(df)), np.zeros(padded_size(len(df)) - len(df), np.int64)])
  data = {"log_loss": np.log(df["loss"].to_numpy(np.float64))[idx],
          "fixed": np.array([fixed[p] for p in law.theta if p in fixed], np.float64)}
  if law.lse_terms is None:
    data["cols"] = {c: v[idx] for c, v in cols.items()}
  else:
    data["logcols"] = np.log(np.stack([cols[c] for c in lse_columns(law)]))[:, idx]
  return data


def pad_weights(w: np.ndarray) -> np.ndarray:
  """Weights (n,) or (K, n) extended with zeros to the padded row count."""
  w = np.asarray(w, np.float64)
  pad = padded_size(w.shape[-1]) - w.shape[-1]
  return np.concatenate([w, np.zeros(w.shape[:-1] + (pad,))], axis=-1)


def bounds(law: laws.Law, free: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Lower and upper bounds of the free parameters (infinite where the law sets none)."""
  return (np.array([law.lower.get(p, -np.inf) for p in free], np.float64),
          np.array([law.upper.get(p, np.inf) for p in free], np.float64))


def parse_fixed(law: laws.Law, items: Mapping[str, float]) -> dict[str, float]:
  """Maps `--fix` values given in published or fit-space names to fit-space names."""
  out = {}
  for name, value in items.items():
    key, val = law.to_theta(name, float(value))
    if key not in law.theta:
      raise UserError(f"--fix {name}: law {law.name} has no parameter {name}; it has {', '.join(law.theta)}")
    out[key] = val
  if len(out) == len(law.theta):
    raise UserError(f"--fix: every parameter of law {law.name} is fixed; nothing is left to fit")
  return out


def check_size(n_points: int, n_free: int, what: str) -> None:
  """Raises a UserError when there are fewer points than free parameters."""
  if n_points < n_free:
    raise UserError(f"{what}: {n_points} point(s) but {n_free} free parameter(s) to fit; need at least {n_free}")


def fit(df: pd.DataFrame, law: laws.Law, *, objective: str = "huber_log", delta: float = objectives.DEFAULT_DELTA,
        fixed: Mapping[str, float] | None = None, starts: np.ndarray | None = None) -> ParametricFit:
  """Fits `law` to the points of `df` (columns: the law's inputs and `loss`) from every grid start."""
  from scaling.fit import optim

  objectives.check(objective)
  fixed = dict(fixed or {})
  free = tuple(p for p in law.theta if p not in fixed)
  check_size(len(df), len(free), f"law {law.name}")
  x0 = law.starts(fixed) if starts is None else np.asarray(starts, np.float64)
  lower, upper = bounds(law, free)
  vg = value_and_grad_fn(law, objective, float(delta), free, tuple(p for p in law.theta if p in fixed))
  with optim.x64():
    res = optim.minimize_mixed(vg, x0, problem_data(df, law, fixed), pad_weights(np.ones(len(df))),
                               lower=lower, upper=upper)
  return summarise(law, objective, delta, fixed, free, res, len(df), lower, upper)


def summarise(law: laws.Law, objective: str, delta: float, fixed: Mapping[str, float], free: Sequence[str],
              res: Any, n_points: int, lower: np.ndarray, upper: np.ndarray, solver: str = "lbfgs") -> ParametricFit:
  """Picks the best start of a multi-start result and writes the warnings a user must see."""
  from scaling.fit import optim

  finite = np.isfinite(res.fun)
  if not finite.any():
    raise UserError(f"law {law.name}: the objective is not finite at any start (check the inputs are positive)")
  # Float32 objectives are biased by rounding; only starts finished in float64 compete for the best.
  rank = np.where(finite, res.fun, np.inf) + np.where(res.final, 0.0, np.inf) if res.final is not None and res.final.any() \
      else np.where(finite, res.fun, np.inf)
  order = np.argsort(rank)
  finite = np.isfinite(rank)
  best = int(order[0])
  theta = {**{p: float(v) for p, v in zip(free, res.x[best])}, **fixed}
  warnings = []
  if not res.converged[best]:
    warnings.append(f"the best start did not converge ({optim.STATUS[int(res.status[best])]} after "
                    f"{int(res.nit[best])} iterations); treat the parameters with care")
  tol = 1e-6 * np.maximum(1.0, np.abs(res.x[best]))
  for i, p in enumerate(free):
    if np.isfinite(lower[i]) and res.x[best, i] - lower[i] <= tol[i] or np.isfinite(upper[i]) and upper[i] - res.x[best, i] <= tol[i]:
      warnings.append(f"parameter {p} = {res.x[best, i]:.6g} sits on its bound [{lower[i]:.6g}, {upper[i]:.6g}]")
  if not res.converged.any():
    warnings.append("no start converged")
  return ParametricFit(
      law=law, objective_name=objective, delta=float(delta), theta=theta, fixed=dict(fixed),
      objective=float(res.fun[best]), n_points=n_points, n_starts=len(res.fun),
      starts_converged=int(res.converged.sum()), best_converged=bool(res.converged[best]),
      best_status=optim.STATUS[int(res.status[best])], best_iterations=int(res.nit[best]), warnings=warnings,
      optima=distinct_optima(res.x[order[finite[order]]]), solver=solver)


def distinct_optima(x_sorted: np.ndarray, k: int = TOP_OPTIMA) -> np.ndarray:
  """Up to `k` distinct rows (to 4 significant digits) of optima sorted best first."""
  seen, out = set(), []
  for row in x_sorted:
    key = tuple(float(f"{v:.4g}") for v in row)
    if key not in seen:
      seen.add(key)
      out.append(row)
    if len(out) == k:
      break
  return np.array(out)


def predict(fit_: ParametricFit, df: pd.DataFrame) -> np.ndarray:
  """Predicted losses of the fitted law at the rows of `df`."""
  return np.asarray(fit_.law.predict(np, fit_.theta, columns(df, fit_.law)))


def batch_fit(law: laws.Law, cols: Mapping[str, np.ndarray], loss: np.ndarray, weights: np.ndarray,
              starts: np.ndarray, *, objective: str = "huber_log", delta: float = objectives.DEFAULT_DELTA,
              fixed: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Fits `law` to K separate data sets at once: columns and losses (K, n), weights (K, n), zero = absent.

  Every data set starts from every row of `starts` (S, P), or of its own `starts[k]` when `starts` is
  (K, S, P); returns the best fit-space parameters (K, len(theta)) and whether each best start converged.
  """
  from scaling.fit import optim

  fixed = dict(fixed or {})
  free = tuple(p for p in law.theta if p not in fixed)
  fixed_names = tuple(p for p in law.theta if p in fixed)
  starts = np.asarray(starts, np.float64)
  K, S = loss.shape[0], starts.shape[-2]
  safe = lambda a: np.where(weights > 0, a, 1.0)  # absent points get harmless values and zero weight
  data = {"log_loss": np.log(safe(loss)), "fixed": np.tile([fixed[p] for p in fixed_names], (K, 1)).reshape(K, -1)}
  if law.lse_terms is None:
    data["cols"] = {c: safe(cols[c]) for c in law.inputs}
  else:
    data["logcols"] = np.log(np.stack([safe(cols[c]) for c in lse_columns(law)], axis=1))
  rep = lambda a: np.repeat(a, S, axis=0)
  vg = value_and_grad_fn(law, objective, float(delta), free, fixed_names, True, True)
  lower, upper = bounds(law, free)
  with optim.x64():
    res = optim.minimize_mixed(vg, starts.reshape(K * S, -1) if starts.ndim == 3 else np.tile(starts, (K, 1)), {k: (rep(v) if not isinstance(v, dict) else
                                                                  {c: rep(a) for c, a in v.items()}) for k, v in data.items()},
                               rep(weights), groups=np.repeat(np.arange(K), S), finalists=1,
                               per_problem_data=True, lower=lower, upper=upper)
  best = np.where(res.final, res.fun, np.inf).reshape(K, S).argmin(axis=1)
  x = res.x.reshape(K, S, -1)[np.arange(K), best]
  conv = res.converged.reshape(K, S)[np.arange(K), best]
  out = np.empty((K, len(law.theta)))
  for j, p in enumerate(law.theta):
    out[:, j] = x[:, free.index(p)] if p in free else fixed[p]
  return out, conv
