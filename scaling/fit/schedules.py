"""Learning-rate schedules as NumPy arrays, by name and knobs or from a table, for curve-law predictions.

`eta[k]` is the learning rate of update k (0-based), i.e. of training step k + 1. The names and knobs follow
scaling.optim (cosine, wsd, multistep, constant; warmup peak*(k+1)/W, exact final LR) so a prediction for one of our
runs sees exactly the schedule it trains with, plus `linear` decay. `multistep` with its default milestones is
Tissue et al.'s '811' (the peak for 80% of the steps, then peak * f^(1/2) for 10%, then peak * f with
f = final_lr_fraction). No JAX: `scaling predict` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.errors import UserError

NAMES = ("cosine", "wsd", "constant", "linear", "multistep", "811")
COOLDOWN_SHAPES = ("linear", "cosine", "exponential")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A named schedule's knobs: `steps` updates, peak LR, warmup steps (linear from 0), decay to final_lr_fraction."""

  name: str
  steps: int
  peak_lr: float
  warmup_steps: int = 0
  final_lr_fraction: float = 0.1
  cooldown_fraction: float = 0.2
  cooldown_shape: str = "linear"
  milestones: tuple[float, ...] = (0.8, 0.9)

  def __post_init__(self) -> None:
    if self.name not in NAMES:
      raise UserError(f"--schedule={self.name!r}: expected one of {', '.join(NAMES)}")
    if self.steps < 1:
      raise UserError(f"--steps={self.steps}: must be a positive number of steps")
    if not self.peak_lr > 0:
      raise UserError(f"--peak_lr={self.peak_lr}: must be positive")
    if not 0 <= self.warmup_steps < self.steps:
      raise UserError(f"--warmup_steps={self.warmup_steps}: must be >= 0 and below --steps={self.steps}")
    if not 0 <= self.final_lr_fraction <= 1:
      raise UserError(f"--final_lr_fraction={self.final_lr_fraction}: must be in [0, 1]")
    if not 0 <= self.cooldown_fraction <= 1:
      raise UserError(f"--cooldown_fraction={self.cooldown_fraction}: must be in [0, 1]")
    if self.cooldown_shape not in COOLDOWN_SHAPES:
      raise UserError(f"--cooldown_shape={self.cooldown_shape!r}: expected one of {', '.join(COOLDOWN_SHAPES)}")
    if self.cooldown_shape == "exponential" and self.final_lr_fraction == 0:
      raise UserError("--cooldown_shape=exponential needs --final_lr_fraction > 0")
    if not self.milestones or any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
      raise UserError(f"--milestones={','.join(map(str, self.milestones))}: increasing fractions in (0, 1)")


def _warmup(k: np.ndarray, s: Schedule) -> np.ndarray:
  return s.peak_lr * k / max(s.warmup_steps, 1)


def _linear_decay(t: np.ndarray, n: int, s: Schedule) -> np.ndarray:
  """`linear` after warmup, at t = 0..n-1 steps past the peak (the one schedule our trainer does not have)."""
  return s.peak_lr + (s.peak_lr * s.final_lr_fraction - s.peak_lr) * np.minimum(t, n) / max(n, 1)


TRAINER_SCHEDULES = ("cosine", "wsd", "multistep", "811", "constant")


def milestone_steps(milestones: tuple[float, ...], steps: int) -> np.ndarray:
  """multistep: the first update (0-based) of each stage after the peak (scaling.optim's rule)."""
  return np.array([min(math.ceil(round(m * steps, 6)), steps - 1) for m in milestones])


def _trainer_rates(k: np.ndarray, s: Schedule) -> np.ndarray:
  """scaling.optim's schedules: warmup peak*(k+1)/W, then a decay from the last warmup step to the last step.

  cosine decays over all steps after warmup, wsd only over its cooldown (the last cooldown_fraction of the
  run), both reaching peak*final_lr_fraction exactly at the last step; multistep drops at its milestones in
  equal ratios down to it (the last stage starts by the last step); constant stays at the peak.
  """
  peak, f, last, warmup = s.peak_lr, s.final_lr_fraction, s.steps - 1, s.warmup_steps
  start = max(warmup - 1, 0)
  if s.name == "wsd":
    start = max(last - max(int(round(s.cooldown_fraction * s.steps)), 1), start)
  t = np.clip((k - start) / max(last - start, 1), 0.0, 1.0)
  if s.name == "cosine":
    rest = peak * (f + (1 - f) * 0.5 * (1 + np.cos(np.pi * t)))
  elif s.name in ("multistep", "811"):
    starts = milestone_steps(s.milestones, s.steps)
    rest = peak * f ** (np.searchsorted(starts, k, side="right") / len(starts))
  elif s.name == "wsd":
    rest = peak * {"linear": 1 - (1 - f) * t, "cosine": f + (1 - f) * 0.5 * (1 + np.cos(np.pi * t)),
                   "exponential": f ** t if f > 0 else 1 - t}[s.cooldown_shape]
  else:
    rest = np.full(k.shape, peak)
  return np.where(k < warmup, peak * (k + 1) / max(warmup, 1), rest)


def learning_rates(s: Schedule) -> np.ndarray:
  """The learning rate of every update 0..steps-1 (scaling.optim's cosine/wsd/multistep/constant, exactly)."""
  k = np.arange(s.steps, dtype=np.float64)
  if s.name in TRAINER_SCHEDULES:
    return _trainer_rates(k, s)
  if s.warmup_steps == 0:
    return _linear_decay(k, s.steps, s)
  rest = s.steps - s.warmup_steps
  return np.where(k < s.warmup_steps, _warmup(k, s), _linear_decay(k - s.warmup_steps, rest, s))


def from_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
  """(steps, lr) from a CSV with columns step, lr (one row per step or fewer; '#' lines are comments)."""
  path = Path(path)
  try:
    df = pd.read_csv(path, comment="#")
  except (OSError, ValueError) as e:
    raise UserError(f"{path}: cannot read as CSV: {e}") from None
  missing = [c for c in ("step", "lr") if c not in df.columns]
  if missing:
    raise UserError(f"{path}: missing column {missing[0]!r} (a schedule needs columns step, lr)")
  steps, lr = df["step"].to_numpy(np.float64), df["lr"].to_numpy(np.float64)
  if len(steps) < 2 or not np.all(np.isfinite(steps)) or not np.all(np.isfinite(lr)):
    raise UserError(f"{path}: a schedule needs 2+ rows of finite step, lr")
  bad = np.flatnonzero(np.diff(steps) <= 0)
  if len(bad):
    raise UserError(f"{path}: column 'step' must increase (row {bad[0] + 2}: {steps[bad[0] + 1]:g} after {steps[bad[0]]:g})")
  if np.any(lr < 0):
    raise UserError(f"{path}: column 'lr' has a negative value (row {int(np.argmax(lr < 0)) + 1})")
  return steps, lr


def per_step(steps: np.ndarray, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The LR at every integer step from min(first, 1) to the last record: linear between records, held before."""
  first, last = int(np.floor(steps[0])), int(np.ceil(steps[-1]))
  grid = np.arange(min(first, 1), last + 1)
  return grid, np.interp(grid, steps, lr)
