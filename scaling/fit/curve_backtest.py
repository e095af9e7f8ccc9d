"""Choosing the learning-curve law's momentum decay lambda by backtest on the finished curves.

lambda sets how long S2 remembers an LR drop, and the final loss the law predicts for a partial run depends on
it far more than the fit objective does (the objective is nearly flat in lambda; docs/fit.md). So
`--lambda_decay auto` picks it the way it will be used: each finished curve in turn is cut back to the
fraction of its planned steps that the partial runs have seen (to nothing when there is no partial run),
fitted together with every other curve, and its final loss predicted. The lambda of the grid with the
lowest mean |relative error| over those held-out finals is kept, and the table goes into fit.json.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from scaling.errors import UserError
from scaling.fit import curve_fit, curves
from scaling.fit.curves import Curve

LAMBDA_GRID = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)


def planned_steps(c: Curve) -> int:
  """The steps the curve's run planned (run directories: run.json's `steps`; tables: the last LR row)."""
  return int(c.meta.get("planned_steps", c.grid[-1]))


def is_finished(c: Curve) -> bool:
  """True when the curve has a point at the last planned step. A table's curve counts as finished unless
  `--curve_until` cut it (a table does not say its plan); a run cut by `--curve_until` is partial."""
  return int(c.steps[-1]) >= planned_steps(c)


def seen_fraction(data: Sequence[Curve]) -> float:
  """The smallest fraction of its planned steps that a partial curve has seen; 0 when every curve is finished."""
  partial = [c for c in data if not is_finished(c)]
  return min((float(c.steps[-1]) / planned_steps(c) for c in partial), default=0.0)


def cut(c: Curve, fraction: float) -> Curve | None:
  """The curve's points up to `fraction` of its planned steps (None for fraction 0 or when no point is left)."""
  keep = c.steps <= fraction * planned_steps(c) * (1 + 1e-9)  # 0.58 x 1500 is 869.999... in floating point
  if fraction <= 0 or not keep.any():
    return None
  return Curve(c.id, c.steps[keep], c.loss[keep], c.grid, c.eta, c.meta)


def final_error(held: Curve, others: Sequence[Curve], fraction: float, opts: curve_fit.Options) -> float | None:
  """Relative error of the law's final loss for `held`, fitted on its first `fraction` and the other curves."""
  part = cut(held, fraction)
  data = [*others, *([part] if part is not None else [])]
  try:
    theta = curve_fit.solve(data, opts)[1].theta
  except UserError:  # too few points, or no decaying LR, without the held-out curve's tail
    return None
  end = Curve(held.id, held.steps[-1:], held.loss[-1:], held.grid, held.eta)
  e1, e2 = curves.features(end, opts.lam, opts.momentum_init)
  pred = float(curves.predict(theta, e1, e2)[0])
  return pred / float(held.loss[-1]) - 1 if np.isfinite(pred) else None


def choose_lambda(data: Sequence[Curve], opts: curve_fit.Options,
                  grid: Sequence[float] = LAMBDA_GRID) -> tuple[float, dict[str, Any]]:
  """(the lambda of `grid` whose held-out final losses are best, the backtest table for fit.json)."""
  curve_fit.check_options(opts)
  curve_fit.check_curves(data, opts)  # bad data is named as such, not as a backtest that failed at every lambda
  if "C" in opts.fix and float(opts.fix["C"]) == 0:
    raise UserError("--lambda_decay=auto with --fix C=0: lambda only enters through C * S2, so there is nothing "
                    "to choose; give --lambda_decay a value")
  finished = [k for k, c in enumerate(data) if is_finished(c)]
  if len(finished) < 2:
    raise UserError(f"--lambda_decay=auto backtests on finished curves (a point at the last planned step): "
                    f"{len(finished)} of {len(data)} are finished, it needs at least 2")
  fraction = seen_fraction(data)
  rows = []
  for lam in grid:
    o = dataclasses.replace(opts, lam=float(lam), bootstrap=0)
    errors = {data[k].id: final_error(data[k], [c for j, c in enumerate(data) if j != k], fraction, o)
              for k in finished}
    ok = [abs(e) for e in errors.values() if e is not None]
    score = float(np.mean(ok)) if len(ok) == len(errors) else None
    rows.append({"lambda": float(lam), "errors": errors, "mean_abs_error": score})
  scored = [r for r in rows if r["mean_abs_error"] is not None]
  if not scored:
    raise UserError("--lambda_decay=auto: no lambda of the grid could fit every backtest (each held-out curve "
                    "with the others); give --lambda_decay a value")
  best = min(scored, key=lambda r: (r["mean_abs_error"], abs(r["lambda"] - curves.LAMBDA)))  # ties: the paper's
  table = {"grid": [float(v) for v in grid], "fraction": fraction, "held_out": [data[k].id for k in finished],
           "rows": rows, "chosen": best["lambda"],
           "rule": "each finished curve cut to `fraction` of its planned steps and fitted with every other curve; "
                   "lambda with the lowest mean |relative error| of the held-out final losses"}
  return best["lambda"], table


def table_text(table: dict[str, Any]) -> str:
  """The backtest as printed by `scaling fit`: one line per lambda, the held-out errors and their mean."""
  held, fraction = table["held_out"], table["fraction"]
  how = f"cut to {fraction:.0%} of its steps and fitted with the others" if fraction > 0 else \
      "left out and the others fitted"
  lines = [f"lambda by backtest: each of {len(held)} finished curves {how}, its final loss predicted (relative error)"]
  for r in table["rows"]:
    errs = "  ".join(f"{k} {'failed' if e is None else f'{e:+.2%}'}" for k, e in r["errors"].items())
    mean = "-" if r["mean_abs_error"] is None else f"{r['mean_abs_error']:.2%}"
    mark = "  <- chosen" if r["lambda"] == table["chosen"] else ""
    lines.append(f"  {r['lambda']:<6g} {errs}  mean |error| {mean}{mark}")
  return "\n".join(lines)
