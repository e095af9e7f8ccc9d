"""Approach 1 (envelope): the minimum loss over runs and checkpoints at each compute, then power laws.

Each run's learning curve is interpolated linearly in (ln C, ln L) between its checkpoints; on a log grid
of compute values the envelope is the lowest loss of any run covering that compute, with that run's N and
its interpolated D. N*(C) and D*(C) are the envelope's N and D, fitted as power laws in log-log (Hoffmann
et al., approach 1); L(C) = E + A C^-alpha is fitted to the envelope losses by the approach-3 machinery.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.errors import UserError
from scaling.fit import isoflop

GRID = 250


def envelope(df: pd.DataFrame, n_grid: int = GRID) -> pd.DataFrame:
  """Envelope points (C, loss, N, D, run) on a log grid of compute spanning the runs' checkpoints."""
  curves = []
  for run, part in df.groupby("run", sort=False):
    part = part.sort_values("C")
    lc = np.log(part["C"].to_numpy(np.float64))
    if len(lc) < 1:
      continue
    curves.append((run, lc, np.log(part["loss"].to_numpy(np.float64)), np.log(part["D"].to_numpy(np.float64)),
                   float(part["N"].iloc[0])))
  if len(curves) < 2:
    raise UserError(f"approach 1 needs learning curves of 2 or more runs; found {len(curves)}")
  lo = min(c[1][0] for c in curves)
  hi = max(c[1][-1] for c in curves)
  grid = np.linspace(lo, hi, n_grid)
  losses = np.full((len(curves), n_grid), np.inf)
  tokens = np.zeros((len(curves), n_grid))
  for i, (_, lc, ll, ld, _) in enumerate(curves):
    inside = (grid >= lc[0]) & (grid <= lc[-1])
    losses[i, inside] = np.interp(grid[inside], lc, ll)
    tokens[i, inside] = np.interp(grid[inside], lc, ld)
  best = np.argmin(losses, axis=0)
  cols = np.arange(n_grid)
  covered = np.isfinite(losses[best, cols])
  env = pd.DataFrame({"C": np.exp(grid), "loss": np.exp(losses[best, cols]), "N": [curves[i][4] for i in best],
                      "D": np.exp(tokens[best, cols]), "run": [curves[i][0] for i in best]})[covered].reset_index(drop=True)
  if env["N"].nunique() < 2:
    raise UserError("approach 1: one run holds the whole loss envelope; N*(C) cannot be fitted "
                    "(sweep more model sizes or give intermediate checkpoints with --points=all)")
  return env


def allocation(env: pd.DataFrame) -> isoflop.AllocationFit:
  """Unweighted log-log fits of the envelope's N and D against compute."""
  a, k_n, obj_n = isoflop.power_fit(env["C"].to_numpy(), env["N"].to_numpy())
  b, k_d, obj_d = isoflop.power_fit(env["C"].to_numpy(), env["D"].to_numpy())
  return isoflop.AllocationFit(a=a, k_N=k_n, b=b, k_D=k_d, objective=obj_n + obj_d, weighted=False,
                               n_budgets=len(env))
