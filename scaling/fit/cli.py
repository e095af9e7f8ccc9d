"""`scaling fit`, `scaling predict` and `scaling report`: argument parsing and printing only.

JAX and matplotlib are imported inside the commands that need them, so `scaling predict` stays fast. The
fit and report commands run JAX in float64 inside their fitting code (see optim.x64) and keep compiled
programs in the persistent compilation cache that training uses (scaling.cache: ~/.cache/scaling/jax).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from scaling import cache
from scaling.errors import UserError
from scaling.fit import curve_cli

SIG = 6  # significant digits printed (4+ are needed to extrapolate)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  """Registers the fit, predict and report subcommands."""
  fit = subparsers.add_parser("fit", help="fit a scaling law to sweep results (run directories or tables)",
                              description="Fit a scaling law; writes fit.json (see docs/fit.md).")
  _data_args(fit)
  _fit_args(fit)
  fit.add_argument("--out", default="fit.json", help="where to write the fit (default fit.json)")
  fit.add_argument("--holdout", help="fit without these runs and predict them: largest | C>1e20 | run=ID[,ID]")
  fit.add_argument("--target", type=float, action="append", default=[],
                   help="also print the compute-optimal N*, D*, L* at this budget (repeatable)")
  curve_cli.add_fit_args(fit)
  fit.set_defaults(func=run_fit)

  pred = subparsers.add_parser("predict", help="predict a loss or a compute-optimal allocation from fit.json")
  pred.add_argument("fit_json", help="a fit.json written by `scaling fit`")
  pred.add_argument("--N", type=float, help="parameters")
  pred.add_argument("--D", type=float, help="tokens")
  pred.add_argument("--compute", type=float, help="training FLOPs budget C: prints N*, D* and L*")
  pred.add_argument("--at", action="append", default=[], metavar="NAME=VALUE", help="other law inputs (e.g. U=1e10)")
  pred.add_argument("--json", action="store_true", help="print JSON instead of text")
  pred.add_argument("--downstream", help="a fit from `scaling fit-downstream`: also predict the error at the predicted loss")
  pred.add_argument("--law_file", help="Python file registering the fit's user-defined law (never imported from fit.json)")
  curve_cli.add_predict_args(pred)
  pred.set_defaults(func=run_predict)

  down = subparsers.add_parser("fit-downstream", help="fit a downstream error law Err(loss) to (loss, error) pairs",
                               description="Fit Err(L) to a table with columns loss and error (see docs/fit.md).")
  _data_args(down)
  down.add_argument("--law", default="exp", help="exp: Err = eps - k exp(-gamma L) (default); "
                    "sigmoid: Err = a / (1 + exp(-k (L - L0))) + b")
  down.add_argument("--loss", default="lsq", help="objective: lsq (default, least squares on the error), huber, lsq_log, huber_log")
  down.add_argument("--delta", type=float, default=1e-3, help="Huber delta (default 1e-3)")
  down.add_argument("--bootstrap", type=int, default=0, help="resamples of runs (rows) for intervals")
  down.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  down.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
  down.add_argument("--holdout", help="fit without these rows and predict them: run=ID[,ID] | L>3.2 | error<0.5")
  down.add_argument("--out", default="downstream_fit.json", help="where to write the fit (default downstream_fit.json)")
  down.set_defaults(func=run_fit_downstream)

  rep = subparsers.add_parser("report", help="write a self-contained HTML report of a sweep or table")
  _data_args(rep, nargs="*")
  _fit_args(rep, bootstrap_default=200)
  rep.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
  rep.add_argument("--target", type=float, action="append", default=[], help="budgets to predict (repeatable)")
  rep.add_argument("--curve_fit", action="append", default=[], metavar="FIT_JSON",
                   help="a fit.json of `scaling fit --law=tissue`: adds a section with its curves (repeatable; "
                   "without INPUT the report holds these sections only)")
  rep.set_defaults(func=run_report)


def _data_args(p: argparse.ArgumentParser, nargs: str = "+") -> None:
  p.add_argument("inputs", nargs=nargs, metavar="INPUT", help="sweep roots, run directories or CSV/JSON tables")
  p.add_argument("--columns", help="map table columns: N=params,D=tokens,loss=val_loss,C=flops,run=a+b")
  p.add_argument("--convention", help="counting convention: 6N|6N_total|chinchilla|xla for run directories "
                 "(default chinchilla: embeddings, output layer and attention counted); for tables a label recorded in fit.json")
  p.add_argument("--filter", help="keep only rows matching this pandas query, e.g. \"config == 'a'\"")
  p.add_argument("--dropna", action="store_true", help="drop rows with a missing value instead of failing")
  p.add_argument("--points", choices=("final", "all"), help="final evaluations only or every checkpoint "
                 "(default: all for approach 1, final otherwise)")


def _fit_args(p: argparse.ArgumentParser, bootstrap_default: int = 0) -> None:
  p.add_argument("--law", default="chinchilla", help="chinchilla (default), kaplan, kaplan_N, kaplan_D, kaplan_C, "
                 "power, power_N, power_D, muennighoff, overtraining, a user law from --law_file/--gin_file, "
                 "auto (with --holdout: every applicable law, the one with the lowest held-out error kept), or "
                 "tissue (alias lr_annealing): the learning-curve law of Tissue et al. 2024")
  p.add_argument("--approach", type=int, default=3, help="1 envelope, 2 IsoFLOP, 3 parametric (default)")
  p.add_argument("--loss", default="huber_log", help="objective: huber_log (default, published), lsq_log, huber, lsq")
  p.add_argument("--delta", type=float, default=1e-3, help="Huber delta (default 1e-3)")
  p.add_argument("--solver", default="lbfgs", help="lbfgs (default: every grid start) or varpro (NNLS for E, A, B)")
  p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help="hold a parameter fixed (repeatable)")
  p.add_argument("--bootstrap", type=int, default=bootstrap_default, help="resamples of runs for intervals")
  p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
  p.add_argument("--isoflop", default="parabola", help="approach 2 per-budget model: parabola (default) or spline")
  p.add_argument("--window", type=int, default=2, help="parabola: sizes on each side of the best one (0 = all)")
  p.add_argument("--budget_tol", type=float, default=0.1, help="points within this relative C share a budget")
  p.add_argument("--unweighted", action="store_true", help="approach 2: unweighted power-law fits of N*, D*")
  p.add_argument("--minima", action="store_true", help="approach 2: the rows are per-budget optima already "
                 "(columns C, N, D, loss, optional N_std, D_std)")
  p.add_argument("--law_file", help="Python file registering laws with @scaling.fit.laws.law")
  p.add_argument("--gin_file", action="append", default=[], help="gin file binding fit_law.* (a user law)")
  p.add_argument("--gin_bindings", action="append", default=[], help="gin binding for fit_law.*")


def _pairs(items: list[str], flag: str) -> dict[str, float]:
  out = {}
  for item in (s for chunk in items for s in chunk.split(",") if s.strip()):
    key, sep, val = item.partition("=")
    try:
      out[key.strip()] = float(val)
    except ValueError:
      raise UserError(f"{flag} {item!r}: expected NAME=NUMBER") from None
    if not sep:
      raise UserError(f"{flag} {item!r}: expected NAME=NUMBER")
  return out


def _register_user_laws(args: argparse.Namespace) -> str | None:
  from scaling.fit import predict
  if args.law_file:
    predict.load_law_file(args.law_file)
  if args.gin_file or args.gin_bindings:
    from scaling.fit import gin_laws
    gin_laws.register(args.gin_file, args.gin_bindings)
  return f"file:{Path(args.law_file).resolve()}" if args.law_file else None


def check_ranges(args: argparse.Namespace) -> None:
  """Raises a UserError naming the first option whose value is out of range."""
  checks = (("delta", lambda v: v > 0, "must be > 0 (at 0 the Huber objective is flat)"),
            ("bootstrap", lambda v: v >= 0, "must be >= 0"), ("seed", lambda v: v >= 0, "must be >= 0"),
            ("level", lambda v: 0 < v < 1, "must be between 0 and 1"), ("window", lambda v: v >= 0, "must be >= 0"),
            ("budget_tol", lambda v: v > 0, "must be > 0"))
  for name, ok, why in checks:
    value = getattr(args, name, None)
    if value is not None and not ok(value):
      raise UserError(f"--{name}={value}: {why}")
  for t in getattr(args, "target", None) or []:
    if not t > 0:
      raise UserError(f"--target={t}: must be a positive compute budget")


def _options(args: argparse.Namespace) -> Any:
  from scaling.fit import pipeline
  check_ranges(args)
  return pipeline.Options(law=args.law, approach=args.approach, objective=args.loss, delta=args.delta,
                          solver=args.solver, fix=_pairs(args.fix, "--fix"), points=args.points,
                          bootstrap=args.bootstrap, seed=args.seed, level=args.level, isoflop=args.isoflop,
                          window=args.window, budget_tol=args.budget_tol, weighted=not args.unweighted,
                          minima=args.minima, holdout=getattr(args, "holdout", None))


def _fit(args: argparse.Namespace) -> tuple[dict[str, Any], Any, Any]:
  from scaling.fit import load, pipeline, select
  law_source = _register_user_laws(args)
  opts = _options(args)
  df, conv = load.load(args.inputs, load.parse_columns(args.columns), args.convention, args.filter, args.dropna)
  cache.enable_compilation_cache()
  if opts.law == select.AUTO:
    fit_ = select.choose(df, conv, opts, args.inputs)
  else:
    fit_ = pipeline.run(df, conv, opts, args.inputs)
  if law_source and fit_.get("law_source") == "decorator":
    fit_["law_source"] = law_source
  warning = pipeline.repeated_data_warning(df, fit_)
  if warning:
    print(f"scaling fit: warning: {warning}", file=sys.stderr)
  return fit_, df, opts


def _writable_out(path: str) -> Path:
  """Creates the parent directory of --out and checks it is writable, before any fitting work."""
  out = Path(path)
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"--out {out}: cannot create {out.parent}: {e.strerror}") from None
  if not os.access(out.parent, os.W_OK) or out.is_dir():
    raise UserError(f"--out {out}: cannot write there")
  return out


def _write(out: Path, text: str) -> None:
  try:
    out.write_text(text)
  except OSError as e:
    raise UserError(f"--out {out}: cannot write: {e.strerror}") from None


def run_fit(args: argparse.Namespace) -> int:
  """`scaling fit`: fit, print a summary, write fit.json."""
  if curve_cli.is_curve_law(args.law):
    return curve_cli.run_fit(args)
  from scaling.fit import pipeline
  out = _writable_out(args.out)
  fit_, _, _ = _fit(args)
  if args.target:
    fit_["targets"] = pipeline.targets(fit_, args.target)
  _write(out, json.dumps(fit_, indent=1, default=float))
  print(summary(fit_))
  print(f"wrote {out}")
  return 0


def _g(x: Any) -> str:
  return f"{x:.{SIG}g}" if isinstance(x, (int, float)) else str(x)


def _iv(fit_: Mapping[str, Any], key: str) -> str:
  iv = fit_.get("intervals", {}).get(key)
  return f"  [{_g(iv[0])}, {_g(iv[1])}]" if iv else ""


def summary(fit_: Mapping[str, Any]) -> str:
  """Human-readable summary of a fit record (parameters to 6 significant digits, intervals, warnings)."""
  if fit_.get("target"):  # a downstream fit: the error from the loss, no sizes and no counting convention
    lines = [f"law {fit_['law']}: {fit_.get('formula', '')}",
             f"points {fit_['n_points']}: {fit_['target']} from {fit_.get('input', 'loss')}"]
  else:
    lines = [f"law {fit_['law']} (approach {fit_['approach']}): {fit_.get('formula', '')}",
             f"points {fit_['n_points']} from {fit_['n_runs']} runs; convention {fit_['convention'].get('name')}: "
             f"N = {fit_['convention'].get('N')}, C = {fit_['convention'].get('C')}"]
  level = int(round(100 * fit_.get("level", 0.95)))
  for k, v in fit_["params"].items():
    lines.append(f"  {k:>8} = {_g(v)}{_iv(fit_, k)}")
  for k, v in fit_.get("derived", {}).items():
    lines.append(f"  {k:>8} = {_g(v)}{_iv(fit_, 'derived.' + k)}")
  if fit_.get("intervals"):
    lines.append(f"intervals: {level}% percentile bootstrap over {fit_['bootstrap']['resamples']} resamples of runs "
                 f"(seed {fit_['bootstrap']['seed']})")
  if "n_starts" in fit_:
    lines.append(f"objective {fit_['objective_name']} = {_g(fit_['objective'])}; {fit_['starts_converged']} of "
                 f"{fit_['n_starts']} starts converged; best start: {fit_['best_start']['status']}")
  elif "loss_law" in fit_:
    ll = fit_["loss_law"]
    lines.append(f"allocation objective = {_g(fit_['objective'])} over {fit_['allocation']['n_budgets']} optima; "
                 f"L*(C) {ll['objective_name']} = {_g(ll['objective'])}, {ll['starts_converged']} of "
                 f"{ll['n_starts']} starts converged")
  for t in fit_.get("targets", []):
    lines.append(f"C = {_g(t['C'])}: " + ", ".join(f"{k}* = {_g(t[k]['value'])}" + (
        f" [{_g(t[k]['interval'][0])}, {_g(t[k]['interval'][1])}]" if "interval" in t[k] else "")
        for k in ("N", "D", "loss")))
  if "holdout" in fit_:
    h = fit_["holdout"]
    for r in h["predictions"]:
      inside = "" if "inside" not in r else ("  inside interval" if r["inside"] else "  OUTSIDE interval")
      lines.append(f"held out {r['run']}: predicted {_g(r['predicted'])}, observed {_g(r['truth'])}, "
                   f"relative error {r['relative_error']:+.3%}{inside}")
  if "law_selection" in fit_:
    from scaling.fit import select
    lines.append(select.table(fit_["law_selection"], SIG))
  for w in fit_.get("warnings", []):
    lines.append(f"WARNING: {w}")
  return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
  """`scaling predict`: loss at (N, D, ...) or the optimum at a compute budget, with intervals."""
  curve_fit_ = curve_cli.read_fit(args.fit_json)
  if curve_fit_ is not None:
    return curve_cli.run_predict(args, curve_fit_)
  from scaling.fit import downstream, predict
  if args.law_file:
    predict.load_law_file(args.law_file)
  fit_ = predict.read(args.fit_json)
  down = predict.read(args.downstream) if args.downstream else None
  if down is not None:
    downstream.check(down, args.downstream)
  at = _pairs(args.at, "--at")
  for name in ("N", "D"):
    value = getattr(args, name)
    if value is not None:
      if value <= 0:
        raise UserError(f"--{name}={value}: must be positive")
      at[name] = value
  if args.compute is not None and args.compute <= 0:
    raise UserError(f"--compute={args.compute}: must be positive")
  if args.compute is None and not at:
    raise UserError("give --N and --D (a loss) or --compute (a compute-optimal allocation)")
  result: dict[str, Any] = {}
  if args.compute is not None:
    result["optimum"] = predict.optimum_at(fit_, args.compute, at)
  if args.compute is None or {"N", "D"} & set(at):
    result["loss"] = predict.loss_at(fit_, at)
  if down is not None:
    result["error"] = _chained_error(fit_, down, args.compute, at)
  if args.json:
    print(json.dumps(result, indent=1))
    return 0
  level = int(round(100 * fit_.get("level", 0.95)))
  fmt = lambda r: _g(r["value"]) + (f"  ({level}% interval {_g(r['interval'][0])} to {_g(r['interval'][1])})"
                                    if "interval" in r else "")
  if "loss" in result:  # a downstream fit's own prediction (`--at L=...`) is an error, not a loss
    print(f"{fit_.get('target', 'loss')} = {fmt(result['loss'])}")
  if "optimum" in result:
    o = result["optimum"]
    print(f"C = {_g(args.compute)}: N* = {fmt(o['N'])}\n  D* = {fmt(o['D'])}\n  L* = {fmt(o['loss'])}")
  if "error" in result:
    print(f"error = {fmt(result['error'])}  ({down['law']} at the predicted {'loss' if 'loss' in result else 'L*'})")
  return 0


def _chained_error(fit_: Mapping[str, Any], down: Mapping[str, Any], compute: float | None,
                   at: Mapping[str, float]) -> dict[str, Any]:
  """The downstream error at the loss predicted at (N, D, ...), or at L* of the budget."""
  import numpy as np
  from scaling.fit import downstream, predict
  if compute is None or {"N", "D"} & set(at):
    point, draws = predict.loss_draws(fit_, at)
  else:
    best, triples = predict.optimum_draws(fit_, compute, at)
    point, draws = best[2], np.array([t[2] for t in triples], np.float64)
  return downstream.chain(down, point, draws)


def run_fit_downstream(args: argparse.Namespace) -> int:
  """`scaling fit-downstream`: fit Err(loss) to (loss, error) pairs, print a summary, write the fit."""
  from scaling.fit import downstream, load, pipeline
  out = _writable_out(args.out)
  check_ranges(args)
  opts = pipeline.Options(law=downstream.law_name(args.law), objective=args.loss, delta=args.delta,
                          bootstrap=args.bootstrap, seed=args.seed, level=args.level, holdout=args.holdout)
  df, conv = load.load(args.inputs, load.parse_columns(args.columns), args.convention, args.filter, args.dropna)
  cache.enable_compilation_cache()
  fit_ = downstream.fit(df, conv, opts, args.inputs)
  _write(out, json.dumps(fit_, indent=1, default=float))
  print(summary(fit_))
  print(f"wrote {out}")
  return 0


def run_report(args: argparse.Namespace) -> int:
  """`scaling report`: fits every approach the data allows, adds the curve-law fits named, writes one HTML page."""
  from scaling.fit import curve_report, load, report
  out = _writable_out(args.out)
  if curve_cli.is_curve_law(args.law):
    raise UserError(f"--law={args.law}: the report shows a learning-curve law from its fit: run `scaling fit INPUT "
                    f"--law={args.law} --out fit.json`, then `scaling report --curve_fit fit.json`")
  if not args.inputs and not args.curve_fit:
    raise UserError("nothing to report: give INPUT (sweep roots, run directories or tables) or --curve_fit FIT_JSON")
  fits = [(path, curve_report.read(path)) for path in args.curve_fit]
  if args.inputs:
    law_source = _register_user_laws(args)
    opts = _options(args)
    df, conv = load.load(args.inputs, load.parse_columns(args.columns), args.convention, args.filter, args.dropna)
  curve_sections, notes = curve_report.sections(fits)
  for note in notes:
    print(f"scaling report: warning: {note}", file=sys.stderr)
  if args.inputs:
    cache.enable_compilation_cache()
    page = report.build(df, conv, opts, args.inputs, args.target, law_source, curve_sections)
  else:
    page = report.page(args.curve_fit, curve_sections)
  _write(out, page)
  print(f"wrote {out}", file=sys.stdout)
  return 0
