"""Bootstrap by run: resample whole runs (not points) with replacement, refit, take percentile intervals.

A run's checkpoints are correlated, so the resampling unit is the run: each resample gives every point the
multiplicity of its run. Approach-3 refits run as one batched L-BFGS over all resamples, each started from
the distinct optima of the full-data fit (not the whole grid: that is what makes 1,000 resamples cheap).
Everything is driven by one seed, so intervals are reproducible.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from scaling.errors import UserError

DEFAULT_LEVEL = 0.95


def run_weights(runs: Sequence[Any], resamples: int, seed: int) -> np.ndarray:
  """(resamples, points) multiplicities: each resample draws as many runs as there are, with replacement."""
  if resamples < 1:
    raise UserError(f"--bootstrap={resamples}: must be a positive number of resamples")
  codes, uniques = pd.factorize(pd.Series(list(runs), dtype=str))
  if len(uniques) < 2:
    raise UserError("--bootstrap needs at least 2 runs to resample")
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, len(uniques), size=(resamples, len(uniques)))
  counts = np.zeros((resamples, len(uniques)))
  np.add.at(counts, (np.repeat(np.arange(resamples), len(uniques)), draws.ravel()), 1.0)
  return counts[:, codes]


def interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> list[float]:
  """Percentile interval [lo, hi] of the finite samples at the given level."""
  s = np.asarray(samples, np.float64)
  s = s[np.isfinite(s)]
  if not len(s):
    return [float("nan"), float("nan")]
  lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
  return [float(lo), float(hi)]


def parametric(df: pd.DataFrame, fit_: Any, resamples: int, seed: int) -> np.ndarray:
  """(resamples, len(theta)) fit-space parameters refitted on run-resampled data (approach 3)."""
  from scaling.fit import optim, parametric as par

  law = fit_.law
  free = tuple(fit_.free)
  fixed = tuple(p for p in law.theta if p in fit_.fixed)
  W = run_weights(df["run"], resamples, seed)
  starts = fit_.optima if len(fit_.optima) else np.array([[fit_.theta[p] for p in free]])
  S = len(starts)
  vg = par.value_and_grad_fn(law, fit_.objective_name, fit_.delta, free, fixed, False, True)
  lower, upper = par.bounds(law, free)
  with optim.x64():
    res = optim.minimize_mixed(vg, np.tile(starts, (resamples, 1)), par.problem_data(df, law, fit_.fixed),
                               np.repeat(par.pad_weights(W), S, axis=0), groups=np.repeat(np.arange(resamples), S), finalists=1,
                               lower=lower, upper=upper)
  best = np.where(res.final, res.fun, np.inf).reshape(resamples, S).argmin(axis=1)
  x = res.x.reshape(resamples, S, -1)[np.arange(resamples), best]
  out = np.empty((resamples, len(law.theta)))
  for j, p in enumerate(law.theta):
    out[:, j] = x[:, free.index(p)] if p in free else fit_.fixed[p]
  return out


def refit(df: pd.DataFrame, fit_once: Callable[[pd.DataFrame], np.ndarray], resamples: int, seed: int) -> np.ndarray:
  """(resamples, k) outputs of `fit_once` on run-resampled copies of `df` (approaches 1 and 2)."""
  W = run_weights(df["run"], resamples, seed)
  rows = []
  for w in W:
    sample = df.loc[np.repeat(np.arange(len(df)), w.astype(int))].reset_index(drop=True)
    try:
      rows.append(fit_once(sample))
    except (UserError, np.linalg.LinAlgError, ValueError):
      rows.append(None)
  width = max((len(r) for r in rows if r is not None), default=0)
  return np.array([r if r is not None else np.full(width, np.nan) for r in rows], np.float64)
