"""Fitting the learning-curve law to curves, with bootstrap intervals, into a fit.json record (data only).

Intervals: with 2+ curves, each resample draws whole curves with replacement; with one curve, a moving-block
bootstrap of its log residuals (blocks of consecutive points, so serially correlated noise stays together)
added to the fitted curve keeps the schedule's coverage, and with it the annealing that fixes C. fit.json
says which (`bootstrap.unit`). Every resample restarts from the full-data optimum.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from scaling.errors import UserError
from scaling.fit import curves
from scaling.fit.curves import Curve


@dataclasses.dataclass(frozen=True)
class Options:
  """How to fit: areas (lambda, m_0), objective, fixed parameters, bootstrap."""

  lam: float = curves.LAMBDA
  momentum_init: str = "zero"
  objective: str = "huber_log"
  delta: float = 1e-3
  fix: dict[str, float] = dataclasses.field(default_factory=dict)
  bootstrap: int = 0
  seed: int = 0
  level: float = 0.95
  block_len: int | None = None


def check_options(opts: Options) -> None:
  """Bad option values become a UserError naming the flag."""
  if not 0 <= opts.lam < 1:
    raise UserError(f"--lambda_decay={opts.lam}: must be in [0, 1)")
  if opts.momentum_init not in ("zero", "first_lr"):
    raise UserError(f"--momentum_init={opts.momentum_init!r}: expected zero or first_lr")
  if opts.objective not in curves.OBJECTIVES:
    raise UserError(f"--loss={opts.objective!r}: the curve law takes {', '.join(curves.OBJECTIVES)}")
  unknown = sorted(set(opts.fix) - set(curves.PARAMS))
  if unknown:
    raise UserError(f"--fix {unknown[0]}: the curve law's parameters are {', '.join(curves.PARAMS)}")
  if opts.block_len is not None and opts.block_len < 1:
    raise UserError(f"--block_len={opts.block_len}: must be >= 1")


def check_curves(data: Sequence[Curve], opts: Options) -> None:
  """The law needs enough points and, unless C is fixed, a curve whose learning rate decays (else C is not identified)."""
  n = sum(len(c.steps) for c in data)
  if n < curves.MIN_POINTS:
    raise UserError(f"{n} points in {len(data)} curve(s): the curve law needs at least {curves.MIN_POINTS}")
  if "C" not in opts.fix and not any(np.any(np.diff(c.eta) < 0) for c in data):
    what = "the one curve" if len(data) == 1 else f"all {len(data)} curves"
    raise UserError(f"the learning rate never decreases in {what} ({', '.join(c.id for c in data)}): the annealing "
                    "term C needs a curve whose LR decays; add one or pass --fix C=0")


def stack(data: Sequence[Curve], opts: Options) -> tuple[np.ndarray, ...]:
  """(S1, S2, loss, curve index, late) over every usable point (S1 > 0); late: past 10% of the curve's steps."""
  parts = []
  for k, c in enumerate(data):
    s1, s2 = curves.features(c, opts.lam, opts.momentum_init)
    keep = s1 > 0
    late = c.steps[keep] >= c.steps[0] + 0.1 * (c.steps[-1] - c.steps[0])
    parts.append((s1[keep], s2[keep], c.loss[keep], np.full(int(keep.sum()), k), late))
  return tuple(np.concatenate(p) for p in zip(*parts))


def _fixed(opts: Options) -> dict[int, float]:
  return {curves.PARAMS.index(k): float(v) for k, v in opts.fix.items()}


def _block_resample(resid: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
  """A moving-block resample of a residual series, same length."""
  n = len(resid)
  starts = rng.integers(0, n - block + 1, size=-(-n // block))
  return np.concatenate([resid[s:s + block] for s in starts])[:n]


def _residuals(fitted: np.ndarray, y: np.ndarray, objective: str) -> np.ndarray:
  return np.log(y) - np.log(fitted) if objective.endswith("_log") else y - fitted


def _apply(fitted: np.ndarray, r: np.ndarray, objective: str) -> np.ndarray:
  return fitted * np.exp(r) if objective.endswith("_log") else fitted + r


def bootstrap(s1: np.ndarray, s2: np.ndarray, y: np.ndarray, idx: np.ndarray, sol: curves.Solution,
              opts: Options) -> dict[str, Any]:
  """Refits under `opts.bootstrap` resamples: of curves when there are 2+, else of residual blocks."""
  rng = np.random.default_rng(opts.seed)
  n_curves = int(idx.max()) + 1
  fixed = _fixed(opts)
  samples = []
  if n_curves > 1:
    unit, block = "curve", None
    members = [np.flatnonzero(idx == k) for k in range(n_curves)]
    for _ in range(opts.bootstrap):
      counts = np.bincount(rng.integers(0, n_curves, n_curves), minlength=n_curves)
      w = np.concatenate([np.full(len(m), c, np.float64) for m, c in zip(members, counts)])
      order = np.concatenate(members)
      samples.append(_refit(s1[order], s2[order], y[order], w, sol, opts, fixed))
  else:
    unit = "residual_block"
    block = opts.block_len or max(1, int(round(len(y) ** (1 / 3))))
    fitted = curves.predict(sol.theta, s1, s2)
    resid = _residuals(fitted, y, opts.objective)
    for _ in range(opts.bootstrap):
      y_star = _apply(fitted, _block_resample(resid, min(block, len(y)), rng), opts.objective)
      samples.append(_refit(s1, s2, y_star, None, sol, opts, fixed))
  out = {"unit": unit, "resamples": opts.bootstrap, "seed": opts.seed, "names": list(curves.PARAMS),
         "samples": [[float(v) for v in s] for s in samples]}
  if block is not None:
    out["block_len"] = block
  return out


def _refit(s1: np.ndarray, s2: np.ndarray, y: np.ndarray, w: np.ndarray | None, sol: curves.Solution,
           opts: Options, fixed: dict[int, float]) -> np.ndarray:
  return curves.minimise(s1, s2, y, w, objective=opts.objective, delta=opts.delta, fixed=fixed,
                         starts=[sol.theta]).theta


def intervals(samples: np.ndarray, level: float) -> dict[str, list[float]]:
  """Percentile intervals at `level` of every parameter."""
  lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
  return {k: [float(a), float(b)] for k, a, b in zip(curves.PARAMS, lo, hi)}


def _curve_record(c: Curve, n_used: int) -> dict[str, Any]:
  return {"id": c.id, "n_points": n_used, "first_step": int(c.steps[0]), "last_step": int(c.steps[-1]),
          "final_lr": float(c.eta[-1]), **c.meta}


def solve(data: Sequence[Curve], opts: Options) -> tuple[tuple[np.ndarray, ...], curves.Solution]:
  """The checked, stacked points of every curve (as `stack` gives them) and the law's joint optimum over them."""
  check_options(opts)
  check_curves(data, opts)
  stacked = stack(data, opts)
  s1, s2, y = stacked[:3]
  if len(y) < curves.MIN_POINTS:
    raise UserError(f"{len(y)} usable points (S1 > 0): the curve law needs at least {curves.MIN_POINTS}")
  return stacked, curves.minimise(s1, s2, y, objective=opts.objective, delta=opts.delta, fixed=_fixed(opts))


def fit(data: Sequence[Curve], opts: Options) -> dict[str, Any]:
  """Fits the law jointly to every curve; returns the fit.json record."""
  (s1, s2, y, idx, late), sol = solve(data, opts)
  fitted = curves.predict(sol.theta, s1, s2)
  rel = fitted / y - 1
  record: dict[str, Any] = {
      "law": curves.NAME, "formula": curves.FORMULA,
      "params": {**{k: float(v) for k, v in zip(curves.PARAMS, sol.theta)}, "lambda": opts.lam},
      "fixed": sorted(["lambda", *opts.fix]),
      "areas": {"lambda": opts.lam, "momentum_init": opts.momentum_init,
                "S1": "sum of the learning rate of every step up to s",
                "S2": "sum of m_i = lambda m_(i-1) + (eta_(i-1) - eta_i); the initial LR rise (warmup) is left out"},
      "objective": sol.objective, "objective_name": opts.objective, "delta": opts.delta,
      "n_points": int(len(y)), "n_curves": len(data), "n_starts": sol.n_starts,
      "starts_converged": sol.starts_converged, "best_start": {"converged": sol.converged, "message": sol.message},
      "fit_quality": {"mean_abs_rel_error": float(np.mean(np.abs(rel))), "max_abs_rel_error": float(np.max(np.abs(rel))),
                      "late_mean_abs_rel_error": float(np.mean(np.abs(rel[late]))),
                      "late_max_abs_rel_error": float(np.max(np.abs(rel[late]))),
                      "late": "points past the first 10% of each curve's steps"},
      "curves": [_curve_record(c, int((idx == k).sum())) for k, c in enumerate(data)],
      "warnings": _warnings(sol),
  }
  if opts.bootstrap:
    if 1 < len(data) < 5:
      record["warnings"].append(f"only {len(data)} curves: the bootstrap by curve has few distinct resamples, so its "
                                "intervals are coarse")
    boot = bootstrap(s1, s2, y, idx, sol, opts)
    record["bootstrap"] = boot
    record["intervals"] = intervals(np.array(boot["samples"]), opts.level)
    record["level"] = opts.level
  else:
    record["intervals"] = {}
  return record


def _warnings(sol: curves.Solution) -> list[str]:
  out = [] if sol.converged else [f"the best start did not converge: {sol.message}"]
  on_bound = [k for k, v, lo, hi in zip(curves.PARAMS, sol.theta, curves.LOWER, curves.UPPER) if v <= lo or v >= hi]
  return out + [f"{k} sits on its bound" for k in on_bound]


def theta_of(fit_: dict[str, Any]) -> np.ndarray:
  """The fitted (L0, A, alpha, C) of a fit.json record."""
  return np.array([float(fit_["params"][k]) for k in curves.PARAMS])


def samples_of(fit_: dict[str, Any]) -> np.ndarray | None:
  """The bootstrap parameter samples of a fit.json record, if any."""
  boot = fit_.get("bootstrap")
  return np.array(boot["samples"], np.float64) if boot and boot.get("samples") else None
