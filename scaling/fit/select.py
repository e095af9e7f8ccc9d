"""Choosing the law by backtest (`--law=auto`): fit every applicable law without the held-out runs, keep the best.

Every law of `CANDIDATES` whose inputs the points have (muennighoff only when `U` is known) is fitted by
approach 3 on the points left after `--holdout`, and scored on the held-out runs by the mean absolute
relative error of its predictions. The table (law, parameters, held-out relative error per run, AIC on the
fitted points) goes into fit.json as `law_selection`; the law with the lowest held-out error is kept.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from scaling.errors import UserError
from scaling.fit import holdout, laws, load, pipeline

AUTO = "auto"
CANDIDATES = ("chinchilla", "kaplan", "overtraining", "muennighoff")


def applicable(df: pd.DataFrame) -> list[str]:
  """Candidate laws whose every input is a column of positive finite numbers in `df`."""
  out = []
  for name in CANDIDATES:
    law = laws.get(name)
    if all(c in df.columns and _positive(df[c]) for c in law.inputs):
      out.append(name)
  return out


def _positive(values: pd.Series) -> bool:
  """Whether every value of a column is a positive finite number."""
  v = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
  return bool(len(v) and np.all(np.isfinite(v) & (v > 0)))


def aic(fit_: Mapping[str, Any], train: pd.DataFrame) -> float:
  """Akaike information criterion n ln(RSS / n) + 2 k of the log residuals on the fitted points."""
  law = laws.get(fit_["law"])
  pred = law.predict(np, fit_["theta"], {c: train[c].to_numpy(np.float64) for c in law.inputs})
  r = np.log(pred) - np.log(train["loss"].to_numpy(np.float64))
  n, k = len(r), len(law.theta) - len(fit_.get("fixed", {}))
  rss = float(np.sum(r * r))
  return float(n * math.log(max(rss, 1e-300) / n) + 2 * k)


def _row(fit_: Mapping[str, Any], train: pd.DataFrame) -> dict[str, Any]:
  """One line of the selection table from a law's backtest fit."""
  preds = fit_["holdout"]["predictions"]
  return {"law": fit_["law"], "params": dict(fit_["params"]), "n_params": len(fit_["theta"]) - len(fit_.get("fixed", {})),
          "held_out": [{"run": p["run"], "relative_error": p["relative_error"]} for p in preds],
          "mean_abs_relative_error": float(np.mean([abs(p["relative_error"]) for p in preds])),
          "aic": aic(fit_, train), "n_points": fit_["n_points"], "objective": fit_["objective"]}


def backtest(df: pd.DataFrame, convention: Mapping[str, Any], opts: Any, inputs: Sequence[str] = (),
             names: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
  """Fits every applicable law on the points without the held-out runs: (table rows, fit records by law)."""
  if not opts.holdout:
    raise UserError("--law=auto chooses the law by backtest: give --holdout (e.g. --holdout=largest)")
  if opts.approach != 3:
    raise UserError(f"--law=auto fits parametric laws: use --approach=3 (not {opts.approach})")
  if opts.fix:
    raise UserError("--law=auto does not take --fix (the laws have different parameters); name one --law")
  points = load.select(df, opts.points or "final")
  candidates = list(names or applicable(points))
  if not candidates:
    raise UserError(f"--law=auto: no candidate law ({', '.join(CANDIDATES)}) has its inputs in the data")
  train, _ = holdout.split(points, opts.holdout, opts.budget_tol)
  rows, fits = [], {}
  for name in candidates:
    fit_ = pipeline.run(df, convention, dataclasses.replace(opts, law=name), inputs)
    fits[name] = fit_
    rows.append(_row(fit_, train))
  return sorted(rows, key=lambda r: r["mean_abs_relative_error"]), fits


def choose(df: pd.DataFrame, convention: Mapping[str, Any], opts: Any, inputs: Sequence[str] = ()) -> dict[str, Any]:
  """The fit.json record of the law with the lowest held-out error, with the whole table as `law_selection`."""
  rows, fits = backtest(df, convention, dataclasses.replace(opts, bootstrap=0), inputs)
  best = rows[0]["law"]
  fit_ = pipeline.run(df, convention, dataclasses.replace(opts, law=best), inputs) if opts.bootstrap else fits[best]
  fit_["law_selection"] = {"criterion": "mean absolute relative error on the held-out runs", "holdout": opts.holdout,
                           "chosen": best, "laws": rows}
  return fit_


def table(selection: Mapping[str, Any], sig: int = 6) -> str:
  """The selection table as aligned text: one line per law, then the relative error of every held-out run."""
  rows = selection["laws"]
  lines = [f"law selection by backtest (--holdout {selection['holdout']}): chosen {selection['chosen']}",
           f"  {'law':<14}{'mean |rel err|':>15}{'AIC':>12}  parameters"]
  for r in rows:
    params = ", ".join(f"{k}={v:.{sig}g}" for k, v in r["params"].items())
    lines.append(f"  {r['law']:<14}{r['mean_abs_relative_error']:>15.3%}{r['aic']:>12.2f}  {params}")
  width = max([len("held-out run")] + [len(h["run"]) for h in rows[0]["held_out"]])
  lines.append("  " + "held-out run".ljust(width) + "".join(f"{r['law']:>14}" for r in rows))
  errors = [{h["run"]: h["relative_error"] for h in r["held_out"]} for r in rows]
  for h in rows[0]["held_out"]:
    lines.append("  " + h["run"].ljust(width) + "".join(f"{e[h['run']]:>+14.3%}" for e in errors))
  return "\n".join(lines)
