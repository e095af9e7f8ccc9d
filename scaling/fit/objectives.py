"""Fit objectives: how residuals between a law and the observed losses are scored and summed.

`huber_log` is the published Hoffmann et al. / Epoch protocol: the SUM (not the mean: a mean makes the
objective so flat that L-BFGS stops early) of Huber(delta) over log residuals ln L_pred - ln L_obs.
`lsq_log` sums squared log residuals; `huber` and `lsq` work on the losses themselves.
"""

from __future__ import annotations

from typing import Any

from scaling.errors import UserError

OBJECTIVES = ("huber_log", "lsq_log", "huber", "lsq")
DEFAULT_DELTA = 1e-3


def check(name: str) -> str:
  """Returns `name` if it is a known objective, else raises a UserError naming the choices."""
  if name not in OBJECTIVES:
    raise UserError(f"--loss={name}: unknown objective; choose one of {', '.join(OBJECTIVES)}")
  return name


def huber(xp: Any, r: Any, delta: float) -> Any:
  """Huber loss: r^2/2 inside |r| <= delta, delta (|r| - delta/2) outside."""
  a = xp.abs(r)
  return xp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def residuals(xp: Any, name: str, log_pred: Any, log_obs: Any) -> Any:
  """Residuals on the scale the objective scores: logs for *_log, losses otherwise."""
  if name.endswith("_log"):
    return log_pred - log_obs
  return xp.exp(log_pred) - xp.exp(log_obs)


def score(xp: Any, name: str, r: Any, delta: float) -> Any:
  """Per-point contribution of residuals `r` to the objective."""
  if name.startswith("huber"):
    return huber(xp, r, delta)
  return r * r
