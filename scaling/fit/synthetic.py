"""Synthetic sweeps drawn from a known law with noise: ground truth for tests, benchmarks and demos."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

# Epoch AI's replication of Hoffmann et al. (2024): the law most synthetic sweeps here are drawn from.
EPOCH = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def chinchilla_loss(p: Mapping[str, float], N: np.ndarray, D: np.ndarray) -> np.ndarray:
  """L = E + A / N^alpha + B / D^beta."""
  return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


def isoflop_sweep(p: Mapping[str, float] = EPOCH, budgets: Sequence[float] = (1e18, 3e18, 1e19, 3e19, 1e20),
                  sizes: int = 9, span: float = 1.5, noise: float = 0.01, seed: int = 0,
                  rng: np.random.Generator | None = None) -> pd.DataFrame:
  """IsoFLOP design: per budget C, `sizes` model sizes log-spaced +-`span` decades around sqrt(C/6) / 4.

  Each run's final loss gets multiplicative log-normal noise of standard deviation `noise`.
  """
  rng = rng or np.random.default_rng(seed)
  rows = []
  for c in budgets:
    centre = np.log10(np.sqrt(c / 6.0) / 4.0)
    for n in np.logspace(centre - span, centre + span, sizes):
      rows.append({"N": n, "D": c / (6.0 * n), "C": c})
  df = pd.DataFrame(rows)
  df["loss"] = chinchilla_loss(p, df["N"].to_numpy(), df["D"].to_numpy()) * np.exp(rng.normal(0.0, noise, len(df)))
  df["run"] = [f"run{i}" for i in range(len(df))]
  df["final"] = True
  df["step"] = 0
  return df


def learning_curves(p: Mapping[str, float] = EPOCH, sizes: Sequence[float] = (2e7, 6e7, 2e8, 6e8, 2e9),
                    tokens_per_param: float = 40.0, checkpoints: int = 30, noise: float = 0.005,
                    seed: int = 0) -> pd.DataFrame:
  """Checkpoints of one run per size trained to `tokens_per_param` x N tokens (loss from the law at D seen)."""
  rng = np.random.default_rng(seed)
  rows = []
  for i, n in enumerate(sizes):
    total = tokens_per_param * n
    for j, d in enumerate(np.geomspace(total / 100, total, checkpoints)):
      rows.append({"run": f"run{i}", "N": n, "D": d, "C": 6.0 * n * d, "step": j, "final": j == checkpoints - 1})
  df = pd.DataFrame(rows)
  df["loss"] = chinchilla_loss(p, df["N"].to_numpy(), df["D"].to_numpy()) * np.exp(rng.normal(0.0, noise, len(df)))
  return df


# Gadre et al. 2024-like constants of the over-training law (C = 6 N D), for synthetic ground truth.
GADRE = {"E": 1.9, "a": 200.0, "b": 1200.0, "eta": 0.16}


def overtraining_loss(p: Mapping[str, float], N: np.ndarray, D: np.ndarray, C: np.ndarray) -> np.ndarray:
  """L = E + (a M^eta + b M^-eta) C^-eta with M = D / N."""
  M = D / N
  return p["E"] + (p["a"] * M ** p["eta"] + p["b"] * M ** -p["eta"]) * C ** -p["eta"]


def overtraining_sweep(p: Mapping[str, float] = GADRE, sizes: Sequence[float] = (1e7, 3e7, 1e8, 3e8, 1e9),
                       multipliers: Sequence[float] = (5, 10, 20, 40, 80, 160, 320), noise: float = 0.005,
                       seed: int = 0) -> pd.DataFrame:
  """One run per (N, M = D/N) pair, C = 6 N D, loss from the over-training law with log-normal noise."""
  rng = np.random.default_rng(seed)
  rows = [{"N": n, "D": m * n, "C": 6.0 * n * m * n} for n in sizes for m in multipliers]
  df = pd.DataFrame(rows)
  df["loss"] = overtraining_loss(p, df["N"].to_numpy(), df["D"].to_numpy(), df["C"].to_numpy()) * np.exp(
      rng.normal(0.0, noise, len(df)))
  df["run"] = [f"run{i}" for i in range(len(df))]
  df["final"] = True
  df["step"] = 0
  return df


def downstream_pairs(law: str, p: Mapping[str, float], losses: np.ndarray, noise: float = 0.003,
                     seed: int = 0) -> pd.DataFrame:
  """(loss, error) pairs from a downstream law (`downstream_exp` or `downstream_sigmoid`) with additive noise."""
  rng = np.random.default_rng(seed)
  L = np.asarray(losses, np.float64)
  if law == "downstream_exp":
    err = p["eps"] - p["k"] * np.exp(-p["gamma"] * L)
  else:
    err = p["a"] / (1.0 + np.exp(-p["k"] * (L - p["L0"]))) + p["b"]
  return pd.DataFrame({"loss": L, "error": err + rng.normal(0.0, noise, len(L)), "run": [f"m{i}" for i in range(len(L))]})
