"""One fit from loaded points to the fit.json record: approach, bootstrap, derived quantities, backtest."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from scaling.errors import UserError
from scaling.fit import bootstrap, envelope, holdout, isoflop, laws, load, objectives, parametric, predict

VERSION = 1
DEFAULT_LEVEL = bootstrap.DEFAULT_LEVEL


@dataclasses.dataclass
class Options:
  """Everything `scaling fit` lets a user choose, with the published protocol as defaults."""

  law: str = "chinchilla"
  approach: int = 3
  objective: str = "huber_log"
  delta: float = objectives.DEFAULT_DELTA
  solver: str = "lbfgs"
  fix: Mapping[str, float] = dataclasses.field(default_factory=dict)
  points: str | None = None
  bootstrap: int = 0
  seed: int = 0
  level: float = DEFAULT_LEVEL
  isoflop: str = "parabola"
  window: int = 2
  budget_tol: float = 0.1
  weighted: bool = True
  minima: bool = False
  holdout: str | None = None


def run(df: pd.DataFrame, convention: Mapping[str, Any], opts: Options, inputs: Sequence[str] = ()) -> dict[str, Any]:
  """Fits the selected points of `df` as `opts` says and returns the fit.json record."""
  if opts.approach not in (1, 2, 3):
    raise UserError(f"--approach={opts.approach}: choose 1 (envelope), 2 (IsoFLOP) or 3 (parametric)")
  points = opts.points or ("all" if opts.approach == 1 else "final")
  df = load.select(df, points)
  train, test = holdout.split(df, opts.holdout, opts.budget_tol) if opts.holdout else (df, None)
  fit_ = {3: _approach3, 2: _approach2, 1: _approach1}[opts.approach](train, opts)
  fit_.update(version=VERSION, approach=opts.approach, convention=dict(convention), points=points,
              n_points=len(train), n_runs=int(train["run"].nunique()), runs=sorted(map(str, train["run"].unique())),
              level=opts.level,
              inputs=[str(i) for i in inputs])
  if test is not None:
    rows = holdout.evaluate(fit_, test, opts.budget_tol)
    fit_["holdout"] = {"spec": opts.holdout, "runs": sorted(set(test["run"])), "predictions": rows,
                       "mean_abs_relative_error": float(np.mean([abs(r["relative_error"]) for r in rows])),
                       "inside": sum(bool(r.get("inside")) for r in rows) if rows and "inside" in rows[0] else None}
  return fit_


def _law_record(law: laws.Law) -> dict[str, Any]:
  rec = {"law": law.name, "formula": law.formula, "law_source": law.source}
  if law.source.startswith("expression:"):
    rec["law_spec"] = {"expression": law.source[len("expression:"):], "inputs": list(law.inputs),
                       "grid": {k: list(map(float, v)) for k, v in law.grid.items()},
                       "lower": dict(law.lower), "upper": dict(law.upper)}
  return rec


def _derived(public: Mapping[str, float]) -> dict[str, float]:
  if "alpha" in public and "beta" in public:
    al, be = public["alpha"], public["beta"]
    out = {"a": be / (al + be), "b": al / (al + be)}
    if "A" in public and "B" in public:
      out["G"] = (al * public["A"] / (be * public["B"])) ** (1.0 / (al + be))
    return out
  return {}


def _fit_record(f: parametric.ParametricFit) -> dict[str, Any]:
  return {"objective_name": f.objective_name, "delta": f.delta, "solver": f.solver, "objective": f.objective,
          "n_starts": f.n_starts, "starts_converged": f.starts_converged,
          "best_start": {"converged": f.best_converged, "status": f.best_status, "iterations": f.best_iterations},
          "warnings": list(f.warnings)}


def _parametric_fit(df: pd.DataFrame, law: laws.Law, opts: Options, fixed: Mapping[str, float]) -> parametric.ParametricFit:
  if opts.solver == "varpro":
    from scaling.fit import varpro
    return varpro.fit(df, law, objective=opts.objective, fixed=fixed)
  if opts.solver != "lbfgs":
    raise UserError(f"--solver={opts.solver}: choose lbfgs or varpro")
  return parametric.fit(df, law, objective=opts.objective, delta=opts.delta, fixed=fixed)


def _approach3(df: pd.DataFrame, opts: Options) -> dict[str, Any]:
  law = laws.get(opts.law)
  load.require(df, [*law.inputs, "loss"], f"law {law.name}")
  fixed = parametric.parse_fixed(law, opts.fix)
  f = _parametric_fit(df, law, opts, fixed)
  public = f.params
  rec = {**_law_record(law), **_fit_record(f), "theta": f.theta, "fixed": fixed, "params": public,
         "derived": _derived(public), "inputs_used": list(law.inputs)}
  if opts.bootstrap:
    samples = bootstrap.parametric(df, f, opts.bootstrap, opts.seed)
    pub = [law.public(dict(zip(law.theta, row))) for row in samples]
    der = [_derived(p) for p in pub]
    rec["intervals"] = {k: bootstrap.interval(np.array([p[k] for p in pub]), opts.level) for k in public}
    rec["intervals"].update({f"derived.{k}": bootstrap.interval(np.array([d[k] for d in der]), opts.level)
                             for k in rec["derived"]})
    rec["bootstrap"] = {"resamples": opts.bootstrap, "seed": opts.seed, "unit": "run", "names": list(law.theta),
                        "samples": samples.tolist()}
  else:
    rec["intervals"] = {}
  return rec


def _loss_law_fit(C: np.ndarray, L: np.ndarray, opts: Options) -> tuple[parametric.ParametricFit | None, list[str]]:
  law = laws.get("power")
  if len(C) < len(law.theta):
    return None, [f"L*(C) not fitted: {len(C)} optima for {len(law.theta)} parameters"]
  f = parametric.fit(pd.DataFrame({"C": C, "loss": L}), law, objective=opts.objective, delta=opts.delta)
  return f, [f"L*(C) fit: {w}" for w in f.warnings]


def _allocation_record(alloc: isoflop.AllocationFit, loss_fit: parametric.ParametricFit | None) -> dict[str, Any]:
  params = {"a": alloc.a, "k_N": alloc.k_N, "b": alloc.b, "k_D": alloc.k_D}
  rec = {"params": params, "allocation": {"weighted": alloc.weighted, "n_budgets": alloc.n_budgets,
                                           "objective": alloc.objective}}
  if loss_fit is not None:
    params.update(loss_fit.params)
    rec["loss_law"] = {"law": loss_fit.law.name, "formula": loss_fit.law.formula, "theta": loss_fit.theta,
                       "params": loss_fit.params, **_fit_record(loss_fit)}
  return rec


def _bootstrap_allocation(rec: dict[str, Any], alloc_samples: np.ndarray, loss_C: np.ndarray, loss_L: np.ndarray,
                          loss_fit: parametric.ParametricFit | None, opts: Options) -> None:
  """Adds allocation (and L*(C)) bootstrap samples and intervals to an approach-1/2 record."""
  names = ["a", "ln_k_N", "b", "ln_k_D"]
  samples = alloc_samples
  if loss_fit is not None:
    ok = np.isfinite(loss_L) & np.isfinite(loss_C) & (loss_L > 0)
    theta, _ = parametric.batch_fit(loss_fit.law, {"C": np.where(ok, loss_C, 1.0)}, np.where(ok, loss_L, 1.0),
                                    ok.astype(np.float64), loss_fit.optima, objective=opts.objective, delta=opts.delta)
    theta[ok.sum(axis=1) < len(loss_fit.law.theta)] = np.nan
    names += [f"loss_{p}" for p in loss_fit.law.theta]
    samples = np.concatenate([alloc_samples, theta], axis=1)
  keep = np.all(np.isfinite(samples), axis=1)
  rec["bootstrap"] = {"resamples": opts.bootstrap, "seed": opts.seed, "unit": "run", "names": names,
                      "samples": samples[keep].tolist(), "failed": int((~keep).sum())}
  iv = {"a": samples[keep, 0], "k_N": np.exp(samples[keep, 1]), "b": samples[keep, 2], "k_D": np.exp(samples[keep, 3])}
  if loss_fit is not None:
    pub = [loss_fit.law.public(dict(zip(loss_fit.law.theta, row[4:]))) for row in samples[keep]]
    iv.update({k: np.array([p[k] for p in pub]) for k in loss_fit.params})
  rec["intervals"] = {k: bootstrap.interval(v, opts.level) for k, v in iv.items()}


def _approach2(df: pd.DataFrame, opts: Options) -> dict[str, Any]:
  load.require(df, ["C", "N", "D", "loss"] + (["N_std"] if opts.minima and "N_std" in df.columns else []), "approach 2")
  if not opts.minima:
    isoflop.check_points(df, opts.budget_tol)
  opt, alloc = isoflop.fit_once(df, opts.isoflop, opts.budget_tol, opts.weighted, opts.minima, opts.window)
  use = opt[opt["ok"]]
  loss_fit, warnings = _loss_law_fit(use["C"].to_numpy(), use["L_star"].to_numpy(), opts)
  warnings += [f"budget C={r.C:.4g}: {r.note}" for r in opt.itertuples() if not r.ok]
  rec = {"law": "isoflop", "formula": "N* = k_N C^a, D* = k_D C^b, L* = E + A C^-alpha",
         "method": "given minima" if opts.minima else opts.isoflop, "objective": alloc.objective,
         "optima": isoflop.summary(opt), **_allocation_record(alloc, loss_fit), "warnings": warnings,
         "starts_converged": loss_fit.starts_converged if loss_fit else None, "intervals": {}}
  if opts.bootstrap:
    budgets = opt["C"].to_numpy()

    def once(sample: pd.DataFrame) -> np.ndarray:
      o, a = isoflop.fit_once(sample, opts.isoflop, opts.budget_tol, opts.weighted, opts.minima, opts.window)
      lstar = np.full(len(budgets), np.nan)
      for r in o[o["ok"]].itertuples():
        lstar[np.argmin(np.abs(np.log(budgets / r.C)))] = r.L_star
      return np.concatenate([isoflop.allocation_vector(a), lstar])

    draws = bootstrap.refit(df, once, opts.bootstrap, opts.seed)
    _bootstrap_allocation(rec, draws[:, :4], np.tile(budgets, (len(draws), 1)), draws[:, 4:], loss_fit, opts)
  return rec


def _approach1(df: pd.DataFrame, opts: Options) -> dict[str, Any]:
  load.require(df, ["C", "N", "D", "loss"], "approach 1")
  env = envelope.envelope(df)
  alloc = envelope.allocation(env)
  loss_fit, warnings = _loss_law_fit(env["C"].to_numpy(), env["loss"].to_numpy(), opts)
  rec = {"law": "envelope", "formula": "N* = k_N C^a, D* = k_D C^b, L(C) = E + A C^-alpha", "method": "envelope",
         "objective": alloc.objective, "optima": isoflop.summary(env), **_allocation_record(alloc, loss_fit),
         "warnings": warnings, "starts_converged": loss_fit.starts_converged if loss_fit else None, "intervals": {}}
  if opts.bootstrap:
    def once(sample: pd.DataFrame) -> np.ndarray:
      e = envelope.envelope(sample)
      pad = lambda v: np.pad(v, (0, envelope.GRID - len(v)), constant_values=np.nan)
      return np.concatenate([isoflop.allocation_vector(envelope.allocation(e)), pad(e["C"].to_numpy()),
                             pad(e["loss"].to_numpy())])

    draws = bootstrap.refit(df, once, opts.bootstrap, opts.seed)
    n = (draws.shape[1] - 4) // 2
    _bootstrap_allocation(rec, draws[:, :4], draws[:, 4:4 + n], draws[:, 4 + n:], loss_fit, opts)
  return rec


FRESH_DATA_LAWS_EXCEPT = ("muennighoff",)


def repeated_data_warning(df: pd.DataFrame, fit_: Mapping[str, Any]) -> str | None:
  """One line when points trained on repeated data (`epochs` > 1) are fitted with a law that assumes fresh data."""
  if fit_.get("law") in FRESH_DATA_LAWS_EXCEPT or "epochs" not in df.columns:
    return None
  epochs = pd.to_numeric(df["epochs"], errors="coerce").to_numpy(np.float64)
  repeated = np.nan_to_num(epochs, nan=1.0) > 1.0
  if not repeated.any():
    return None
  return (f"{int(repeated.sum())} of {len(df)} point(s) saw their data more than once (epochs up to "
          f"{np.nanmax(epochs):.3g}) but law {fit_['law']} assumes fresh data; consider --law=muennighoff")


def targets(fit_: Mapping[str, Any], budgets: Sequence[float]) -> list[dict[str, Any]]:
  """Compute-optimal predictions at the given budgets (for the report and the fit summary)."""
  out = []
  for c in budgets:
    try:
      out.append({"C": float(c), **predict.optimum_at(fit_, float(c))})
    except UserError:
      break
  return out
