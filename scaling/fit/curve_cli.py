"""`scaling fit --law=tissue` and `scaling predict` for the learning-curve law: flags, fitting, printing.

The law, areas and fit live in scaling.fit.curves and scaling.fit.curve_fit; schedules in
scaling.fit.schedules; inputs in scaling.fit.curve_load. A curve fit.json has `law` = 'tissue' and is read
as plain JSON (never executed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

import numpy as np

from scaling.errors import UserError

LAWS = ("tissue", "lr_annealing")
SIG = 6


def is_curve_law(name: str | None) -> bool:
  """True for the names of the learning-curve law."""
  return name in LAWS


def add_fit_args(p: argparse.ArgumentParser) -> None:
  """Flags of `scaling fit` that only the curve law reads."""
  g = p.add_argument_group("learning-curve law (--law=tissue, alias lr_annealing)")
  g.add_argument("--curve_loss", default="eval_loss", help="run directories: eval_loss (default) or train_loss")
  g.add_argument("--curve_until", type=float, help="fit only steps <= this (a value < 1: that fraction of the planned steps)")
  g.add_argument("--curve_from", type=float, help="fit only steps >= this (a value < 1: that fraction of the planned steps)")
  g.add_argument("--lambda_decay", type=_lambda_decay, default=0.999,
                 help="momentum decay lambda of S2 (default 0.999), or auto: chosen by backtest on the finished curves")
  g.add_argument("--momentum_init", default="zero", help="m_0 of S2: zero (default, the paper) or first_lr")
  g.add_argument("--block_len", type=int, help="one curve: points per bootstrap block (default n^(1/3))")


def _lambda_decay(text: str) -> float | str:
  """--lambda_decay: a number, or 'auto' (chosen by backtest, scaling.fit.curve_backtest)."""
  if text == "auto":
    return text
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number in [0, 1) or auto, got {text!r}") from None


def add_predict_args(p: argparse.ArgumentParser) -> None:
  """Flags of `scaling predict` for a curve-law fit.json."""
  g = p.add_argument_group("learning-curve law: a schedule to predict")
  g.add_argument("--schedule", help="cosine, wsd, constant, linear, multistep or 811")
  g.add_argument("--steps", type=int, help="training steps of the schedule")
  g.add_argument("--peak_lr", type=float, help="peak learning rate")
  g.add_argument("--warmup_steps", type=int, default=0, help="linear warmup from 0 (default 0)")
  g.add_argument("--final_lr_fraction", type=float, default=0.1, help="final LR / peak (default 0.1)")
  g.add_argument("--cooldown_fraction", type=float, default=0.2, help="wsd: fraction of steps in the cooldown (default 0.2)")
  g.add_argument("--cooldown_shape", default="linear", help="wsd cooldown: linear (default), cosine or exponential")
  g.add_argument("--milestones", default="0.8,0.9", help="multistep: fractions of the steps where the LR drops")
  g.add_argument("--schedule_csv", help="a CSV of step, lr instead of a named schedule")
  g.add_argument("--partial", help="a partial run (run directory, or a CSV with --schedule*): its final loss")
  g.add_argument("--every", type=int, help="rows of the predicted curve every this many steps (default ~200 rows)")
  g.add_argument("--out", help="write the predicted curve (CSV) here instead of stdout")


def _g(x: Any) -> str:
  return f"{x:.{SIG}g}" if isinstance(x, (int, float)) else str(x)


def _options(args: argparse.Namespace) -> Any:
  from scaling.fit import cli, curve_fit, curves
  if args.bootstrap < 0:
    raise UserError(f"--bootstrap={args.bootstrap}: must be >= 0")
  if not 0 < args.level < 1:
    raise UserError(f"--level={args.level}: must be between 0 and 1")
  lam = curves.LAMBDA if args.lambda_decay == "auto" else args.lambda_decay
  return curve_fit.Options(lam=lam, momentum_init=args.momentum_init, objective=args.loss,
                           delta=args.delta, fix=cli._pairs(args.fix, "--fix"), bootstrap=args.bootstrap,
                           seed=args.seed, level=args.level, block_len=args.block_len)


def _reject_other_options(args: argparse.Namespace) -> None:
  """Options of the N, D laws that the curve law would silently ignore are an error instead."""
  other = {"--holdout": getattr(args, "holdout", None), "--target": getattr(args, "target", None),
           "--approach": args.approach != 3, "--solver": args.solver != "lbfgs", "--minima": args.minima,
           "--points": args.points, "--convention": args.convention, "--law_file": args.law_file,
           "--gin_file": args.gin_file, "--gin_bindings": args.gin_bindings}
  given = [flag for flag, value in other.items() if value]
  if given:
    raise UserError(f"{given[0]} does not apply to --law={args.law} (a learning-curve law; see docs/fit.md)")


def fit_inputs(args: argparse.Namespace) -> dict[str, Any]:
  """Loads the curves named by the arguments, fits the law and returns the fit.json record."""
  from scaling.fit import curve_backtest, curve_fit, curve_load, load
  _reject_other_options(args)
  opts = _options(args)
  data = curve_load.load_curves(args.inputs, args.columns, args.curve_loss, args.filter)
  data = [curve_load.truncate(c, args.curve_until, args.curve_from) for c in data]
  backtest = None
  if args.lambda_decay == "auto":
    lam, backtest = curve_backtest.choose_lambda(data, opts)
    opts = dataclasses.replace(opts, lam=lam)
  record = curve_fit.fit(data, opts)
  if backtest is not None:
    record["lambda_backtest"] = backtest
  record["inputs"] = [str(i) for i in args.inputs]
  record["load"] = {"columns": load.parse_columns(args.columns), "filter": args.filter, "curve_loss": args.curve_loss}
  return record


def run_fit(args: argparse.Namespace) -> int:
  """`scaling fit --law=tissue`: fit the curve law, print a summary, write fit.json."""
  from scaling.fit import cli
  out = cli._writable_out(args.out)
  record = fit_inputs(args)
  cli._write(out, json.dumps(record, indent=1))
  print(summary(record))
  print(f"wrote {out}")
  return 0


def summary(fit_: Mapping[str, Any]) -> str:
  """Human-readable summary of a curve-law fit record."""
  how = "chosen by backtest" if fit_.get("lambda_backtest") else "fixed"
  lines = [f"law {fit_['law']}: {fit_['formula']}",
           f"points {fit_['n_points']} from {fit_['n_curves']} curve(s); "
           f"lambda = {_g(fit_['params']['lambda'])} ({how}), m_0 = {fit_['areas']['momentum_init']}"]
  if fit_.get("lambda_backtest"):
    from scaling.fit import curve_backtest
    lines.append(curve_backtest.table_text(fit_["lambda_backtest"]))
  for k in ("L0", "A", "alpha", "C"):
    iv = fit_.get("intervals", {}).get(k)
    lines.append(f"  {k:>6} = {_g(fit_['params'][k])}" + (f"  [{_g(iv[0])}, {_g(iv[1])}]" if iv else ""))
  if fit_.get("bootstrap"):
    lines.append(f"intervals: {bootstrap_text(fit_)}")
  lines.append(f"objective {fit_['objective_name']} = {_g(fit_['objective'])}; {fit_['starts_converged']} of "
               f"{fit_['n_starts']} starts converged; {quality_text(fit_['fit_quality'])}")
  lines += [f"WARNING: {w}" for w in fit_.get("warnings", [])]
  return "\n".join(lines)


def bootstrap_text(fit_: Mapping[str, Any]) -> str:
  """How a curve fit's intervals were made (level, resamples, unit, seed), for the summary and the report."""
  b = fit_["bootstrap"]
  unit = "curves" if b["unit"] == "curve" else f"residual blocks of {b.get('block_len', '?')} points"
  return (f"{int(round(100 * fit_['level']))}% percentile bootstrap over {b['resamples']} resamples of {unit} "
          f"(seed {b['seed']})")


def quality_text(q: Mapping[str, Any]) -> str:
  """A curve fit's relative errors, overall and past the first 10% of steps, for the summary and the report."""
  return (f"mean |relative error| {q['mean_abs_rel_error']:.3%}, max {q['max_abs_rel_error']:.3%} (past the first "
          f"10% of steps: {q['late_mean_abs_rel_error']:.3%}, max {q['late_max_abs_rel_error']:.3%})")


def read_json(path: str | Path) -> Any:
  """The JSON value in the file at `path` (plain data, never executed); a UserError when it cannot be read."""
  path = Path(path)
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: cannot read fit JSON: {str(e).splitlines()[0]}") from None


def read_fit(path: str | Path) -> dict[str, Any] | None:
  """The fit.json at `path` if it is a curve-law fit, else None (plain JSON, never executed)."""
  fit_ = read_json(path)
  if not isinstance(fit_, dict) or not is_curve_law(fit_.get("law")):
    return None
  params = fit_.get("params", {})
  missing = [k for k in ("L0", "A", "alpha", "C", "lambda") if not isinstance(params.get(k), (int, float))]
  if missing or "areas" not in fit_:
    raise UserError(f"{path}: curve-law fit.json lacks {('params.' + missing[0]) if missing else 'areas'}")
  return fit_


def _named_schedule(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str] | None:
  """(steps 1..N, LR per step, description) from --schedule knobs or --schedule_csv, or None if neither."""
  from scaling.fit import schedules
  if args.schedule and args.schedule_csv:
    raise UserError("give --schedule or --schedule_csv, not both")
  if args.schedule_csv:
    steps, lr = schedules.from_csv(args.schedule_csv)
    grid, eta = schedules.per_step(steps, lr)
    return grid, eta, f"schedule {args.schedule_csv}"
  if not args.schedule:
    return None
  for flag in ("steps", "peak_lr"):
    if getattr(args, flag) is None:
      raise UserError(f"--schedule={args.schedule} needs --{flag}")
  try:
    milestones = tuple(float(m) for m in args.milestones.split(",") if m.strip())
  except ValueError:
    raise UserError(f"--milestones={args.milestones!r}: expected fractions like 0.8,0.9") from None
  name = "multistep" if args.schedule == "811" else args.schedule
  s = schedules.Schedule(name, args.steps, args.peak_lr, args.warmup_steps, args.final_lr_fraction,
                         args.cooldown_fraction, args.cooldown_shape, milestones if name == "multistep" else (0.8, 0.9))
  return np.arange(1, s.steps + 1), schedules.learning_rates(s), f"{args.schedule} schedule of {s.steps} steps"


def predict_curve(fit_: Mapping[str, Any], grid: np.ndarray, eta: np.ndarray,
                  at: np.ndarray) -> dict[str, np.ndarray]:
  """The law's curve (and bootstrap band) at the steps `at` of a per-step schedule (grid, eta) where S1 > 0."""
  from scaling.fit import curve_fit, curves
  curve = curves.Curve("predict", at, np.ones(len(at)), grid, eta)
  s1, s2 = curves.features(curve, float(fit_["params"]["lambda"]), fit_["areas"]["momentum_init"])
  if not np.any(s1 > 0):
    raise UserError("the schedule's learning rate is 0 at every step: nothing to predict")
  at, s1, s2 = at[s1 > 0], s1[s1 > 0], s2[s1 > 0]
  out = {"step": at, "lr": eta[np.searchsorted(grid, at)], "S1": s1, "S2": s2,
         "loss": curves.predict(curve_fit.theta_of(dict(fit_)), s1, s2)}
  samples = curve_fit.samples_of(dict(fit_))
  if samples is not None:
    level = float(fit_.get("level", 0.95))
    band = np.stack([curves.predict(t, s1, s2) for t in samples])
    band[~np.isfinite(band)] = np.nan
    out["loss_lo"], out["loss_hi"] = np.nanpercentile(band, [50 * (1 - level), 50 * (1 + level)], axis=0)
  return out


def _rows(grid: np.ndarray, every: int | None) -> np.ndarray:
  """Steps to print: every `every` steps (default about 200 rows), always the last."""
  first, last = max(int(grid[0]), 1), int(grid[-1])
  every = every or max(1, (last - first + 1) // 200)
  if every < 1:
    raise UserError(f"--every={every}: must be >= 1")
  return np.unique(np.concatenate([np.arange(first, last + 1, every), [last]]))


def _write_curve(table: Mapping[str, np.ndarray], stream: TextIO) -> None:
  cols = [c for c in ("step", "lr", "S1", "S2", "loss", "loss_lo", "loss_hi") if c in table]
  stream.write(",".join(cols) + "\n")
  for i in range(len(table["step"])):
    stream.write(",".join(str(int(table[c][i])) if c == "step" else f"{table[c][i]:.{SIG + 2}g}" for c in cols) + "\n")


def _final_line(fit_: Mapping[str, Any], table: Mapping[str, np.ndarray], what: str) -> str:
  i = len(table["step"]) - 1
  text = f"{what}: final loss at step {int(table['step'][i])} = {_g(float(table['loss'][i]))}"
  if "loss_lo" in table:
    level = int(round(100 * float(fit_.get("level", 0.95))))
    text += f"  ({level}% interval {_g(float(table['loss_lo'][i]))} to {_g(float(table['loss_hi'][i]))})"
  return text


def _partial(args: argparse.Namespace, fit_: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
  """The planned schedule of a partial run and lines describing what it has observed so far."""
  from scaling.fit import curve_load
  path = Path(args.partial)
  if path.is_dir():
    loss_key = next((c.get("loss") for c in fit_.get("curves", []) if c.get("loss")), "eval_loss")
    curve = curve_load.from_run_dir(path, loss_key)
    if curve.meta["lr_source"] != "schedule":
      raise UserError(f"{path}: run.json does not give the planned schedule (or it disagrees with the logged lr); "
                      "give the plan with --schedule ... or --schedule_csv")
    grid, eta = curve.grid, curve.eta
  elif path.is_file():
    curve = curve_load.from_table(path)[-1]
    planned = _named_schedule(args)
    if planned is None:
      raise UserError(f"{path}: a table does not say its planned schedule: give --schedule ... or --schedule_csv")
    grid, eta, _ = planned
  else:
    raise UserError(f"--partial {path}: no such file or directory")
  notes = [f"partial run {curve.id}: observed loss {_g(float(curve.loss[-1]))} at step {int(curve.steps[-1])} "
           f"of {int(grid[-1])} planned"]
  return grid, eta, f"partial run {curve.id} under its planned schedule", notes


def run_predict(args: argparse.Namespace, fit_: Mapping[str, Any]) -> int:
  """`scaling predict` for a curve-law fit: the curve under a schedule, or a partial run's final loss."""
  notes: list[str] = []
  if args.partial:
    grid, eta, what, notes = _partial(args, fit_)
  else:
    planned = _named_schedule(args)
    if planned is None:
      raise UserError("a curve-law fit predicts a schedule: give --schedule NAME --steps N --peak_lr LR, "
                      "--schedule_csv F or --partial RUN")
    grid, eta, what = planned
  table = predict_curve(fit_, grid, eta, _rows(grid, args.every))
  final = _final_line(fit_, table, what)
  if args.json:
    print(json.dumps({"final": {k: float(v[-1]) for k, v in table.items()}, "notes": notes}, indent=1))
    return 0
  if args.out:
    from scaling.fit import cli
    out = cli._writable_out(args.out)
    with open(out, "w") as f:
      _write_curve(table, f)
    print("\n".join([*notes, final, f"wrote {out}"]))
  elif args.partial:
    print("\n".join([*notes, final]))
  else:
    _write_curve(table, sys.stdout)
    print(final, file=sys.stderr)
  return 0
