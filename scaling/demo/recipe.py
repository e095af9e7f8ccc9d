"""The demo's recipe: its knobs (`demo.*`), the checks that a sweep can be trusted to extrapolate, and the
choice of the run that tests the prediction (a budget `target_factor` x the largest swept one).

An earlier naive probe here failed for reasons these checks name before any time goes into the large run:
a budget whose lowest loss sits at the edge of its sizes (the optimum was not bracketed), and a target
whose tokens exceed the training split (the held-out run repeats data a fresh-data law knows nothing of).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import gin

if TYPE_CHECKING:
  import pandas as pd


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the demo does around the sweep: the target budget, the fit's bootstrap and interval level."""

  target_factor: float
  bootstrap: int
  level: float
  seed: int
  max_epochs: float


@gin.configurable("demo")
def settings(target_factor: float = 10.0, bootstrap: int = 200, level: float = 0.9, seed: int = 0,
             max_epochs: float = 1.0) -> Settings:
  """`demo.*` knobs: the target is `target_factor` x the largest IsoFLOP budget; intervals are `level`
  percentile intervals over `bootstrap` resamples of runs; the target may see its data `max_epochs` times."""
  if not (isinstance(target_factor, (int, float)) and target_factor >= 1):
    raise ValueError(f"demo.target_factor must be >= 1, got {target_factor!r}")
  if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
    raise ValueError(f"demo.bootstrap must be a whole number >= 0, got {bootstrap!r}")
  if not (isinstance(level, float) and 0 < level < 1):
    raise ValueError(f"demo.level must be between 0 and 1, got {level!r}")
  if not (isinstance(max_epochs, (int, float)) and max_epochs > 0):
    raise ValueError(f"demo.max_epochs must be positive, got {max_epochs!r}")
  return Settings(float(target_factor), bootstrap, level, int(seed), float(max_epochs))


def bracket_failures(final: pd.DataFrame) -> list[str]:
  """One line per IsoFLOP budget whose lowest final loss is at its smallest or largest size (or that has
  fewer than 3 sizes): its minimum is then an edge, not an optimum, and approach 2 cannot place it.

  `final` has a row per finished run with columns budget, N, D, loss and shape.
  """
  out = []
  for budget, group in final.groupby("budget"):
    g = group.sort_values("N").reset_index(drop=True)
    if len(g) < 3:
      out.append(f"budget {budget:.3g}: only {len(g)} finished size(s); a minimum needs 3 or more")
      continue
    best = int(g["loss"].idxmin())
    if best not in (0, len(g) - 1):
      continue
    ratio = g["D"][best] / g["N"][best]
    if best == 0:
      where = (f"smallest size ({g['shape'][best]}, N = {g['N'][best]:.3g}), so the optimum lies below the swept "
               f"sizes, at more tokens per parameter than D/N = {ratio:.3g}: lower isoflop.centre (or raise "
               "isoflop.tokens_per_param), or widen isoflop.spread")
    else:
      where = (f"largest size ({g['shape'][best]}, N = {g['N'][best]:.3g}), so the optimum lies above the swept "
               f"sizes, at fewer tokens per parameter than D/N = {ratio:.3g}: raise isoflop.centre (or lower "
               "isoflop.tokens_per_param), or widen isoflop.spread")
    out.append(f"budget {budget:.3g}: the lowest loss ({g['loss'][best]:.4f}) is at the {where}")
  return out


def target_budget(budgets: Sequence[float], factor: float) -> float:
  """The budget of the held-out run: `factor` x the largest swept budget."""
  return float(factor * max(budgets))


def within_sweep(batch: int, learning_rate: float, sweep: pd.DataFrame) -> tuple[int, float]:
  """The target's batch (sequences) and LR, held to the ranges the sweep's runs trained with (`sweep` has
  columns batch and lr): the law was fitted to runs with those, and knows nothing of what a batch or LR
  outside them does. The size rules, evaluated 10x beyond the largest budget, would leave them."""
  batch = min(int(batch), int(sweep["batch"].max()))
  return batch, float(min(max(learning_rate, float(sweep["lr"].min())), float(sweep["lr"].max())))


def epochs_failure(tokens: float, unique_tokens: float | None, max_epochs: float) -> str | None:
  """Why the target may not train on `tokens` (more passes over the training split than allowed), or None."""
  if not unique_tokens:
    return None
  epochs = tokens / unique_tokens
  if epochs <= max_epochs * (1 + 1e-9):
    return None
  return (f"the target run needs D = {tokens:,.0f} tokens, {epochs:.2f} epochs of the training split "
          f"({unique_tokens:,.0f} tokens), but its law assumes fresh data (demo.max_epochs = {max_epochs:g}); "
          "lower the budgets (isoflop.budgets) or demo.target_factor")
