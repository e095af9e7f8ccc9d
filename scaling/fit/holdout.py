"""Backtests: fit without some runs, predict them, and report the relative error and interval coverage.

`--holdout` takes `largest` (the runs at the largest compute budget), a comparison on a column
(`C>1e20`, `N>=1e9`, `D<2e9`), or `run=ID[,ID...]`. A run is held out when any of its points matches.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import pandas as pd

from scaling.errors import UserError
from scaling.fit import isoflop, predict

_COMPARISON = re.compile(r"^\s*([A-Za-z_]\w*)\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+)\s*$")
_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "==": np.equal}


def held_out_runs(df: pd.DataFrame, spec: str, tol: float = 0.1) -> set[str]:
  """Run ids selected by a `--holdout` spec."""
  spec = spec.strip()
  if spec == "largest":
    if "C" not in df.columns:
      raise UserError("--holdout largest needs compute C; use COLUMN>VALUE or run=ID[,ID]")
    groups = isoflop.budget_ids(df, tol)
    return set(df["run"][groups == groups.max()])
  if spec.startswith("run="):
    wanted = {r.strip() for r in spec[4:].split(",") if r.strip()}
    unknown = wanted - set(df["run"])
    if unknown:
      raise UserError(f"--holdout {spec}: no run {sorted(unknown)[0]!r} in the input")
    return wanted
  m = _COMPARISON.match(spec)
  if not m:
    raise UserError(f"--holdout {spec!r}: use largest, COLUMN>VALUE (also >=, <, <=, ==) or run=ID[,ID]")
  col, op, value = m.group(1), m.group(2), float(m.group(3))
  if col not in df.columns:
    raise UserError(f"--holdout {spec}: no column {col!r}; columns are {', '.join(map(str, df.columns))}")
  return set(df["run"][_OPS[op](pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64), value)])


def split(df: pd.DataFrame, spec: str, tol: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
  """(training points, held-out points); raises when either side would be empty."""
  runs = held_out_runs(df, spec, tol)
  test = df["run"].isin(runs)
  if not test.any():
    raise UserError(f"--holdout {spec}: selects no run")
  if test.all():
    raise UserError(f"--holdout {spec}: selects every run; nothing is left to fit")
  return df[~test].reset_index(drop=True), df[test].reset_index(drop=True)


def evaluate(fit_: Mapping[str, Any], test: pd.DataFrame, tol: float = 0.1) -> list[dict[str, Any]]:
  """Per held-out run (approach 3) or budget (approaches 1, 2): prediction, truth, relative error, coverage."""
  rows = []
  if fit_["approach"] == 3:
    law_inputs = fit_.get("inputs_used", ["N", "D"])
    for _, r in test.iterrows():
      pred = predict.loss_at(fit_, {c: float(r[c]) for c in law_inputs})
      rows.append(_record(str(r["run"]), {c: float(r[c]) for c in law_inputs}, pred, float(r["loss"])))
  else:
    groups = isoflop.budget_ids(test, tol)
    for g in np.unique(groups):
      part = test[groups == g]
      best = part.loc[part["loss"].idxmin()]
      c = isoflop.budget_value(part)
      rows.append(_record(str(best["run"]), {"C": c}, predict.loss_at(fit_, {"C": c}), float(part["loss"].min())))
  return rows


def _record(run: str, at: Mapping[str, float], pred: Mapping[str, Any], truth: float) -> dict[str, Any]:
  out = {"run": run, **at, "truth": truth, "predicted": pred["value"], "relative_error": (pred["value"] - truth) / truth}
  if "interval" in pred:
    lo, hi = pred["interval"]
    out.update(interval=[lo, hi], inside=bool(lo <= truth <= hi))
  return out
