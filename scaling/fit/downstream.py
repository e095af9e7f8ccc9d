"""Downstream error from loss: fit Err(L) to (loss, error) pairs, then chain it with a loss law's fit.json.

Two laws (both in `laws.py`, fitted by the approach-3 machinery with the loss as the input column `L` and
the error as the target): `exp`, Err(L) = eps - k exp(-gamma L) (Gadre et al. 2024), and `sigmoid`,
Err(L) = a / (1 + exp(-k (L - L0))) + b (Bhagia et al. 2024, OLMo model ladders, step 2). The loss of the
table must be the loss a loss law predicts (e.g. the C4 eval loss, or a task loss fitted with its own law),
so that `scaling predict fit.json --N ... --D ... --downstream downstream_fit.json` can feed one into the
other. Intervals of a chained prediction pair the two fits' bootstrap samples (cyclically).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from scaling.errors import UserError
from scaling.fit import bootstrap, laws, load, pipeline, predict

LAWS = {"exp": "downstream_exp", "sigmoid": "downstream_sigmoid"}
KIND = "downstream"


def law_name(short: str) -> str:
  """The registered law of a `--law` choice of `scaling fit-downstream`."""
  if short in LAWS.values():
    return short
  if short not in LAWS:
    raise UserError(f"--law={short}: choose one of {', '.join(LAWS)} for a downstream fit")
  return LAWS[short]


def frame(df: pd.DataFrame) -> pd.DataFrame:
  """(loss, error) rows as the fit sees them: the loss as input column `L`, the error as target `loss`."""
  load.require(df, ["loss", "error"], "a downstream fit")
  if len(df) < 2:
    raise UserError(f"a downstream fit needs 2 or more (loss, error) pairs; the input has {len(df)}")
  out = df.drop(columns=["L"], errors="ignore").rename(columns={"loss": "L", "error": "loss"})
  out["L"] = out["L"].astype(np.float64)
  out["loss"] = out["loss"].astype(np.float64)
  out["final"] = True
  return out.reset_index(drop=True)


def fit(df: pd.DataFrame, convention: Mapping[str, Any], opts: Any, inputs: Sequence[str] = ()) -> dict[str, Any]:
  """Fits a downstream law to a table of (loss, error) pairs; returns its fit.json record."""
  rec = pipeline.run(frame(df), convention, dataclasses.replace(opts, law=law_name(opts.law), approach=3, points="all"),
                     inputs)
  rec.update(kind=KIND, target="error", input="loss")
  return rec


def check(fit_: Mapping[str, Any], where: Any) -> None:
  """Raises a UserError unless `fit_` is a downstream fit."""
  if fit_.get("kind") != KIND:
    raise UserError(f"{where}: not a downstream fit (write one with `scaling fit-downstream`)")


def chain(down: Mapping[str, Any], loss_point: float, loss_draws: np.ndarray) -> dict[str, Any]:
  """Error predicted at a predicted loss, with an interval over paired samples of both fits."""
  law = laws.get(down["law"])
  err = lambda th, L: float(law.predict(np, th, {"L": np.float64(L)}))
  thetas = predict.samples(down)
  point = err(predict.point(down), loss_point)
  n = max(len(thetas), len(loss_draws))
  draws = []
  for i in range(n):
    th = thetas[i % len(thetas)] if thetas else predict.point(down)
    L = loss_draws[i % len(loss_draws)] if len(loss_draws) else loss_point
    draws.append(err(th, L))
  return predict.with_interval(draws, point, down.get("level", bootstrap.DEFAULT_LEVEL))
