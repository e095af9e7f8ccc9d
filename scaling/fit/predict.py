"""Predictions from a fit.json: the loss at (N, D, ...) or the compute-optimal (N*, D*, L*) at a budget.

Uses numpy only (no JAX), so `scaling predict` starts fast. Intervals are percentiles of the prediction
over the stored bootstrap samples; without samples a prediction has no interval.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from scaling.errors import UserError
from scaling.fit import bootstrap, laws

SEARCH_HALF_WIDTH = 12.0  # ln N searched on each side of sqrt(C / k) for laws without a closed-form optimum
SEARCH_POINTS = 4001


def read(path: str | Path) -> dict[str, Any]:
  """Loads a fit.json written by `scaling fit`; never runs code (a file law must be loaded by --law_file first)."""
  path = Path(path)
  try:
    fit_ = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{path}: cannot read fit JSON: {str(e).splitlines()[0]}") from None
  for key in ("law", "approach", "params"):
    if key not in fit_:
      raise UserError(f"{path}: not a fit.json from `scaling fit` (no {key!r})")
  ensure_law(fit_, path)
  return fit_


def ensure_law(fit_: Mapping[str, Any], where: Any = "fit") -> None:
  """Registers an expression law stored in the fit; a law from a file must already be registered.

  A fit.json is data: a law file it names is never imported here (pass it with --law_file).
  """
  source = fit_.get("law_source", "builtin")
  name = fit_.get("loss_law", {}).get("law") if fit_["approach"] != 3 else fit_["law"]
  if name in laws.names():
    return
  if source.startswith("expression:"):
    spec = fit_["law_spec"]
    laws.expression_law(fit_["law"], spec["expression"], spec["inputs"], spec["grid"], spec.get("lower"), spec.get("upper"))
  elif source.startswith("file:"):
    raise UserError(f"{where}: law {name!r} comes from {source[len('file:'):]}; reading a fit.json never runs code, "
                    f"so name that file again with --law_file")
  if name not in laws.names():
    raise UserError(f"{where}: law {name!r} is not registered (pass its --law_file)")


def load_law_file(path: str) -> None:
  """Imports a Python file whose `@law` decorators register user-defined laws."""
  p = Path(path)
  if not p.is_file():
    raise UserError(f"--law_file {path}: no such file")
  spec = importlib.util.spec_from_file_location(f"scaling_user_law_{p.stem}", p)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # the user's code may raise anything
    raise UserError(f"--law_file {path}: {type(e).__name__}: {e}".splitlines()[0]) from None


def samples(fit_: Mapping[str, Any]) -> list[dict[str, float]]:
  """The stored bootstrap samples of a fit as parameter dicts (empty without a bootstrap)."""
  boot = fit_.get("bootstrap") or {}
  names = boot.get("names", [])
  return [dict(zip(names, row)) for row in boot.get("samples", [])]


def point(fit_: Mapping[str, Any]) -> dict[str, float]:
  """The fit's point estimate in the names its samples use."""
  return dict(fit_["theta"]) if fit_["approach"] == 3 else {**_alloc_names(fit_["params"]), **{
      f"loss_{k}": v for k, v in fit_.get("loss_law", {}).get("theta", {}).items()}}


def _alloc_names(p: Mapping[str, float]) -> dict[str, float]:
  return {"a": p["a"], "ln_k_N": float(np.log(p["k_N"])), "b": p["b"], "ln_k_D": float(np.log(p["k_D"]))}


def with_interval(values: list[float], point: float, level: float) -> dict[str, Any]:
  """A prediction record: the value, and its percentile interval when there are samples."""
  out = {"value": float(point)}
  if values:
    out["interval"] = bootstrap.interval(np.array(values), level)
  return out


def loss_draws(fit_: Mapping[str, Any], at: Mapping[str, float]) -> tuple[float, np.ndarray]:
  """Predicted loss at the given inputs: the point estimate and one value per stored bootstrap sample."""
  if fit_["approach"] == 3:
    law = laws.get(fit_["law"])
    readable = set(law.inputs) | ({"N", "D"} if "C" in law.inputs else set())
    unknown = [name for name in at if name not in readable]
    if unknown:
      raise UserError(f"law {law.name} predicts from {', '.join(law.inputs)}, not {unknown[0]}")
    at = with_compute(fit_, law, at)
    missing = [c for c in law.inputs if c not in at]
    if missing:
      raise UserError(f"law {law.name} predicts from {', '.join(law.inputs)}; give --{' --'.join(missing)}"
                      if all(m in ("N", "D") for m in missing) else
                      f"law {law.name} needs {', '.join(missing)}: pass --at {missing[0]}=VALUE")
    f = lambda th: float(law.predict(np, th, {c: np.float64(at[c]) for c in law.inputs}))
  else:
    if "C" not in at:
      raise UserError(f"an approach-{fit_['approach']} fit predicts the optimal loss at a compute budget: use --compute")
    if "loss_law" not in fit_:
      raise UserError("this fit has no L*(C) law (too few optima to fit one); it predicts N* and D* only")
    law = laws.get(fit_["loss_law"]["law"])
    f = lambda th: float(law.predict(np, {k[5:]: v for k, v in th.items() if k.startswith("loss_")}, {"C": np.float64(at["C"])}))
  return f(point(fit_)), np.array([f(s) for s in samples(fit_)], np.float64)


def loss_at(fit_: Mapping[str, Any], at: Mapping[str, float]) -> dict[str, Any]:
  """Predicted loss at the given inputs (N, D, ... for approach 3; C for approaches 1 and 2)."""
  point, draws = loss_draws(fit_, at)
  return with_interval(list(draws), point, fit_.get("level", bootstrap.DEFAULT_LEVEL))


def with_compute(fit_: Mapping[str, Any], law: laws.Law, at: Mapping[str, float]) -> dict[str, float]:
  """`at` plus C = k N D (k the fit's `flops_per_nd`) when the law reads C and only N and D are given."""
  out = dict(at)
  if "C" in law.inputs and "C" not in out and {"N", "D"} <= set(out):
    out["C"] = float(fit_.get("convention", {}).get("flops_per_nd", 6.0)) * out["N"] * out["D"]
  return out


def optimum_draws(fit_: Mapping[str, Any], compute: float,
                  at: Mapping[str, float] | None = None) -> tuple[tuple[float, float, float], list[tuple[float, float, float]]]:
  """Compute-optimal (N*, D*, L*) at budget `compute`: the point estimate and one triple per bootstrap sample."""
  k = float(fit_.get("convention", {}).get("flops_per_nd", 6.0))
  solve = (lambda th: _optimum_theta(fit_, th, compute, k, at or {})) if fit_["approach"] == 3 else (
      lambda th: _optimum_alloc(fit_, th, compute))
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # far-out bootstrap samples give inf/nan
    return solve(point(fit_)), [solve(s) for s in samples(fit_)]


def optimum_at(fit_: Mapping[str, Any], compute: float, at: Mapping[str, float] | None = None) -> dict[str, Any]:
  """Compute-optimal N*, D* and loss L* at budget `compute`, each with its bootstrap interval."""
  level = fit_.get("level", bootstrap.DEFAULT_LEVEL)
  point, draws = optimum_draws(fit_, compute, at)
  return {key: with_interval([d[i] for d in draws], point[i], level) for i, key in enumerate(("N", "D", "loss"))}


def _optimum_alloc(fit_: Mapping[str, Any], th: Mapping[str, float], compute: float) -> tuple[float, float, float]:
  loss = float("nan")
  if "loss_law" in fit_:
    law = laws.get(fit_["loss_law"]["law"])
    loss = float(law.predict(np, {k[5:]: v for k, v in th.items() if k.startswith("loss_")}, {"C": np.float64(compute)}))
  return float(np.exp(th["ln_k_N"]) * compute ** th["a"]), float(np.exp(th["ln_k_D"]) * compute ** th["b"]), loss


def _optimum_theta(fit_: Mapping[str, Any], th: Mapping[str, float], compute: float, k: float,
                   at: Mapping[str, float]) -> tuple[float, float, float]:
  law = laws.get(fit_["law"])
  if not {"N", "D"} <= set(law.inputs):
    raise UserError(f"law {law.name} is not a law of N and D; it has no compute-optimal allocation")
  extra = {c: np.float64(at[c]) for c in law.inputs if c not in ("N", "D", "C") and c in at}
  if "C" in law.inputs:
    extra["C"] = np.float64(compute)
  missing = [c for c in law.inputs if c not in ("N", "D") and c not in extra]
  if missing:
    raise UserError(f"law {law.name} needs {', '.join(missing)} for an optimum: pass --at {missing[0]}=VALUE")
  if law.optimum is not None and not extra:
    n, d = law.optimum(np, law.public(th), compute, k)
  else:
    centre = 0.5 * np.log(compute / k)
    ln_n = np.linspace(centre - SEARCH_HALF_WIDTH, centre + SEARCH_HALF_WIDTH, SEARCH_POINTS)
    n_grid = np.exp(ln_n)
    losses = law.predict(np, th, {"N": n_grid, "D": compute / (k * n_grid), **extra})
    i = int(np.clip(np.nanargmin(losses), 1, SEARCH_POINTS - 2))
    y0, y1, y2 = losses[i - 1:i + 2]
    shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) if (y0 - 2 * y1 + y2) > 0 else 0.0
    n = float(np.exp(ln_n[i] + shift * (ln_n[1] - ln_n[0])))
    d = compute / (k * n)
  loss = float(law.predict(np, th, {"N": np.float64(n), "D": np.float64(d), **extra}))
  return float(n), float(d), loss
