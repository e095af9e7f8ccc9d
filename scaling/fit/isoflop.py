"""Approach 2 (IsoFLOP): per compute budget, the minimum of loss over model size gives (N*, D*, L*).

Points are grouped into budgets (C within `tol` of each other). Per budget a parabola in ln N (Hoffmann
et al.) or an interpolating Akima spline in (ln N, ln L) (Porian et al.) is fitted; its minimum gives N*
and L*, and the same in ln D gives D*. A minimum outside the sampled sizes is reported and left out. Then
N* = k_N C^a and D* = k_D C^b are fitted by (weighted) least squares in log-log, and L*(C) = E + A C^-alpha
by the approach-3 machinery. `--minima` inputs are per-budget optima already (e.g. Porian's optimal pairs).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from scaling.errors import UserError

METHODS = ("parabola", "spline")
SPLINE_DENSITY = 25  # grid points per gap between sampled sizes (as Porian et al.)
MIN_STD_FACTOR = 0.33  # floor of sigma(ln N*) in units of the size-grid spacing (as Porian et al.)
GAP_SPREAD = 3.0  # a gap in sorted ln C separates budgets when it exceeds this many typical within-budget spreads


def group_budgets(C: np.ndarray, tol: float) -> np.ndarray:
  """Budget index of every point, in order of C: clusters of ln C (see `cluster_log_compute`)."""
  C = np.asarray(C, np.float64)
  order = np.argsort(C)
  sizes = cluster_log_compute(np.log(C[order]), tol)
  ids = np.empty(len(C), np.int64)
  ids[order] = np.repeat(np.arange(len(sizes)), sizes)
  return ids


def cluster_log_compute(x: np.ndarray, tol: float) -> list[int]:
  """Sizes of the clusters of sorted ln C values, left to right.

  A gap between consecutive values separates two budgets when it exceeds ln(1 + tol) and GAP_SPREAD
  times the typical spread (median standard deviation in ln C of the clusters of 3+ points), the spread
  re-estimated until the clusters stop changing. Points on exact budgets have no spread, so every gap
  above ln(1 + tol) separates them; points scattered around budgets (digitised or logged C) gather into
  their budget instead of splitting into many.
  """
  x = np.asarray(x, np.float64)
  if not len(x):
    return []
  gaps = np.diff(x)
  cut = gaps > np.log1p(tol)
  while True:
    spread = _typical_spread(np.split(x, np.flatnonzero(cut) + 1))
    new = cut & (gaps > GAP_SPREAD * spread)
    if np.array_equal(new, cut):
      break
    cut = new
  return [len(p) for p in np.split(x, np.flatnonzero(cut) + 1)]


def _typical_spread(parts: list[np.ndarray]) -> float:
  """Median standard deviation of the clusters with 3 or more points (0 when there are none)."""
  spreads = [float(np.std(p)) for p in parts if len(p) >= 3]
  return float(np.median(spreads)) if spreads else 0.0


def budget_ids(df: pd.DataFrame, tol: float) -> np.ndarray:
  """Budget index of every point: a sweep's planned `budget` column when every point has one, else clusters of C."""
  if "budget" in df.columns:
    planned = pd.to_numeric(df["budget"], errors="coerce").to_numpy(np.float64)
    if len(planned) and np.all(np.isfinite(planned) & (planned > 0)):
      return np.unique(planned, return_inverse=True)[1].astype(np.int64)
  return group_budgets(df["C"].to_numpy(np.float64), tol)


def budget_value(part: pd.DataFrame) -> float:
  """The budget of one group of points: its planned budget (when counted like C), else the geometric mean of C."""
  planned = "budget" in part.columns and pd.to_numeric(part["budget"], errors="coerce").notna().all()
  same_count = "budget_in_C" not in part.columns or part["budget_in_C"].fillna(False).astype(bool).all()
  if planned and same_count:
    return float(pd.to_numeric(part["budget"]).iloc[0])
  return float(np.exp(np.log(part["C"].to_numpy(np.float64)).mean()))


def budgets_found(df: pd.DataFrame, tol: float) -> list[dict[str, Any]]:
  """One record per budget found: C, points, the range of C of its points, and how it was found."""
  ids = budget_ids(df, tol)
  planned = "budget" in df.columns and pd.to_numeric(df["budget"], errors="coerce").notna().all()
  out = []
  for g in np.unique(ids):
    part = df[ids == g]
    out.append({"C": budget_value(part), "points": int(len(part)), "C_min": float(part["C"].min()),
                "C_max": float(part["C"].max()), "sizes": int(part["N"].nunique()) if "N" in part else 0,
                "found_by": "sweep budget (run.json)" if planned else "clusters of ln C"})
  return sorted(out, key=lambda r: r["C"])


def _vertex(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, str]:
  """Minimum (x*, y*, sigma of x*) of the least-squares parabola through (x, y), and why it failed."""
  if len(np.unique(x)) < 3:
    return np.nan, np.nan, np.nan, "fewer than 3 distinct sizes"
  if len(x) > 3:
    coef, cov = np.polyfit(x, y, 2, cov=True)
  else:
    coef, cov = np.polyfit(x, y, 2), np.zeros((3, 3))
  a2, a1, a0 = coef
  if a2 <= 0:
    return np.nan, np.nan, np.nan, "loss is not convex in ln N"
  xs = -a1 / (2 * a2)
  if not x.min() <= xs <= x.max():
    return xs, np.polyval(coef, xs), np.nan, "minimum outside the sampled sizes"
  grad = np.array([a1 / (2 * a2 * a2), -1 / (2 * a2), 0.0])
  return xs, float(np.polyval(coef, xs)), float(np.sqrt(max(grad @ cov @ grad, 0.0))), ""


def _spline_min(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, str]:
  """Minimum of an Akima spline through (x, ln y) on a fine grid; an edge minimum is a failure."""
  from scipy.interpolate import Akima1DInterpolator

  frame = pd.DataFrame({"x": x, "y": np.log(y)}).groupby("x", as_index=False).mean()
  if len(frame) < 3:
    return np.nan, np.nan, np.nan, "fewer than 3 distinct sizes"
  grid = np.linspace(frame.x.iloc[0], frame.x.iloc[-1], (len(frame) - 1) * SPLINE_DENSITY)
  vals = Akima1DInterpolator(frame.x.to_numpy(), frame.y.to_numpy())(grid)
  i = int(np.argmin(vals))
  if i in (0, len(grid) - 1):
    return grid[i], float(np.exp(vals[i])), np.nan, "minimum at the edge of the sampled sizes"
  return grid[i], float(np.exp(vals[i])), np.nan, ""


def window(x: np.ndarray, loss: np.ndarray, k: int) -> np.ndarray:
  """Mask of the sampled size with the lowest loss and up to `k` sizes on each side of it (all if k <= 0)."""
  if k <= 0:
    return np.ones(len(x), bool)
  sizes = np.unique(x)
  best = np.searchsorted(sizes, x[np.argmin(loss)])
  lo, hi = sizes[max(best - k, 0)], sizes[min(best + k, len(sizes) - 1)]
  return (x >= lo) & (x <= hi)


@np.errstate(over="ignore")
def minima(df: pd.DataFrame, method: str = "parabola", tol: float = 0.1, k: int = 2) -> pd.DataFrame:
  """One row per budget: C, N_star, D_star, L_star, sigma_lnN, sigma_lnD, n_points, ok, note.

  The parabola is fitted to the size with the lowest loss and `k` sizes on each side (all sizes if k <= 0):
  a parabola is a good local model of the IsoFLOP valley, not of its far tails.
  """
  if method not in METHODS:
    raise UserError(f"--isoflop={method}: choose one of {', '.join(METHODS)}")
  groups = budget_ids(df, tol)
  rows = []
  for g in np.unique(groups):
    part = df[groups == g]
    x, xd, loss = np.log(part["N"].to_numpy(np.float64)), np.log(part["D"].to_numpy(np.float64)), part["loss"].to_numpy(np.float64)
    if method == "parabola":
      mn, md = window(x, loss, k), window(xd, loss, k)
      (xn, ln, sn, why), (xt, _, sd, why_d) = _vertex(x[mn], loss[mn]), _vertex(xd[md], loss[md])
    else:
      (xn, ln, sn, why), (xt, _, sd, why_d) = _spline_min(x, loss), _spline_min(xd, loss)
    spacing = np.median(np.diff(np.unique(x))) if len(np.unique(x)) > 1 else np.nan
    spacing_d = np.median(np.diff(np.unique(xd))) if len(np.unique(xd)) > 1 else np.nan
    floor = lambda s, h: float(np.nanmax([s if np.isfinite(s) else 0.0, MIN_STD_FACTOR * h])) if np.isfinite(h) else np.nan
    rows.append({"C": budget_value(part), "N_star": float(np.exp(xn)),
                 "D_star": float(np.exp(xt)), "L_star": float(ln), "sigma_lnN": floor(sn, spacing),
                 "sigma_lnD": floor(sd, spacing_d), "n_points": len(part), "ok": not why and not why_d,
                 "note": why or why_d})
  return pd.DataFrame(rows).sort_values("C").reset_index(drop=True)


def given_minima(df: pd.DataFrame) -> pd.DataFrame:
  """Per-budget optima given as rows (C, N, D, loss, optional N_std/D_std log standard deviations)."""
  out = pd.DataFrame({"C": df["C"], "N_star": df["N"], "D_star": df["D"], "L_star": df["loss"],
                      "sigma_lnN": df["N_std"] if "N_std" in df.columns else np.nan,
                      "sigma_lnD": df["D_std"] if "D_std" in df.columns else np.nan,
                      "n_points": 1, "ok": True, "note": ""})
  return out.sort_values("C").reset_index(drop=True)


def power_fit(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None) -> tuple[float, float, float]:
  """Weighted least squares of ln y on ln x: (exponent, coefficient, weighted sum of squared residuals)."""
  X, Y = np.log(x), np.log(y)
  w = np.ones_like(X) if sigma is None or not np.all(np.isfinite(sigma) & (sigma > 0)) else 1.0 / sigma ** 2
  A = np.stack([np.ones_like(X), X], axis=1) * np.sqrt(w)[:, None]
  (c0, c1), *_ = np.linalg.lstsq(A, Y * np.sqrt(w), rcond=None)
  return float(c1), float(np.exp(c0)), float(np.sum(w * (Y - c0 - c1 * X) ** 2))


@dataclasses.dataclass
class AllocationFit:
  """N* = k_N C^a and D* = k_D C^b fitted to per-budget optima (approaches 1 and 2)."""

  a: float
  k_N: float
  b: float
  k_D: float
  objective: float
  weighted: bool
  n_budgets: int


def allocation(opt: pd.DataFrame, weighted: bool = True) -> AllocationFit:
  """Fits the compute-optimal allocation to the usable optima (weights 1/sigma^2 when `weighted`)."""
  use = opt[opt["ok"] & np.isfinite(opt["N_star"]) & np.isfinite(opt["D_star"])]
  if use["C"].nunique() < 2:
    raise UserError(f"approach 2 needs optima at 2 or more compute budgets; found {use['C'].nunique()} "
                    f"(of {len(opt)} budgets; {'; '.join(sorted(set(opt['note']) - {''})) or 'one budget only'})")
  sig_n = use["sigma_lnN"].to_numpy(np.float64) if weighted else None
  sig_d = use["sigma_lnD"].to_numpy(np.float64) if weighted else None
  a, k_n, obj_n = power_fit(use["C"].to_numpy(), use["N_star"].to_numpy(), sig_n)
  b, k_d, obj_d = power_fit(use["C"].to_numpy(), use["D_star"].to_numpy(), sig_d)
  return AllocationFit(a=a, k_N=k_n, b=b, k_D=k_d, objective=obj_n + obj_d,
                       weighted=bool(weighted and sig_n is not None and np.all(np.isfinite(sig_n))), n_budgets=len(use))


def allocation_vector(fit_: AllocationFit) -> np.ndarray:
  """[a, ln k_N, b, ln k_D]: the allocation as the bootstrap stores it."""
  return np.array([fit_.a, np.log(fit_.k_N), fit_.b, np.log(fit_.k_D)])


def check_points(df: pd.DataFrame, tol: float) -> None:
  """Raises a UserError when some points carry a planned budget and others do not (a sweep root holding
  other parts than IsoFLOP profiles), or when the points span a single budget (no allocation can be fitted)."""
  if "budget" in df.columns:
    planned = pd.to_numeric(df["budget"], errors="coerce")
    has = (planned > 0).to_numpy()
    if has.any() and not has.all():
      raise UserError(f"approach 2: {int((~has).sum())} of {len(df)} points have no IsoFLOP budget (runs of another "
                      "sweep part); select the IsoFLOP runs with --filter 'budget > 0'")
  if len(np.unique(budget_ids(df, tol))) < 2:
    raise UserError(f"approach 2 needs points at 2 or more compute budgets; all {len(df)} points are at one "
                    f"budget C = {df['C'].iloc[0]:.4g} (within --budget_tol={tol})")


def fit_once(df: pd.DataFrame, method: str, tol: float, weighted: bool, given: bool,
             k: int = 2) -> tuple[pd.DataFrame, AllocationFit]:
  """Optima then allocation fit: the whole approach-2 pipeline on one data set."""
  opt = given_minima(df) if given else minima(df, method, tol, k)
  return opt, allocation(opt, weighted)


def summary(opt: pd.DataFrame) -> list[dict[str, Any]]:
  """The optima as JSON-ready records."""
  return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in opt.to_dict("records")]
