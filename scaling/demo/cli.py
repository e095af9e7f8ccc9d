"""`scaling demo`: the main job end to end, as one ordinary sweep root.

1. an IsoFLOP sweep on this machine (`configs/sweeps/demo.gin`, or `demo_quick.gin` with `--quick`);
2. approach 3 and approach 2 fits with bootstrap intervals over runs, after checking that every budget's
   minimum is bracketed;
3. a prediction of the compute-optimal N*, D* and loss at `demo.target_factor` (10) x the largest budget,
   stored before the run that tests it starts;
4. that run trained (part scope `target` of the same root), then a report of predicted against measured
   loss. The last line printed is the prediction error. Running the same command again resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from scaling import cache
from scaling.errors import UserError

SPECS = {False: "sweeps/demo.gin", True: "sweeps/demo_quick.gin"}
ROOTS = {False: "runs/demo", True: "runs/demo_quick"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  """Registers `scaling demo`."""
  p = subparsers.add_parser(
      "demo", help="predict a 10x larger run from a small IsoFLOP sweep, train it, and report the error",
      description="IsoFLOP sweep -> approach 2/3 fits -> prediction at 10x the largest budget -> that run "
                  "trained -> report (docs/demo.md). Run the same command again to resume.")
  p.add_argument("--root", default=None, help="the sweep root (default runs/demo; runs/demo_quick with --quick)")
  p.add_argument("--quick", action="store_true", help="the same path at toy sizes, in a few minutes (the CI smoke test)")
  p.add_argument("--workers", type=int, default=None,
                 help="sweep worker processes (default: one per CPU core, at most 2); the target run gets all cores")
  p.add_argument("--gin_bindings", action="append", default=[], help="extra binding, e.g. 'demo.bootstrap = 500'")
  p.add_argument("--retry_failed", action="store_true", help="train failed runs again (from their checkpoints)")
  p.set_defaults(func=demo)


def _say(line: str) -> None:
  """A progress line on stderr (stdout keeps the last line, the prediction error)."""
  print(f"scaling demo: {line}", file=sys.stderr, flush=True)


def _train(root: Path, specs: Sequence[ml_collections.ConfigDict], workers: int) -> int:
  """Trains the specs' runs that are not done (longest first) with a live view; returns the exit status."""
  from scaling import runs
  from scaling.sweep import cli as sweep_cli, local
  from scaling.sweep.view import SweepView

  states = {s.run_id: runs.read_status(root / s.run_id)["state"] for s in specs}
  todo = sweep_cli.longest_first(specs, states)
  if not todo:
    return 0
  return local.run(root, todo, min(workers, len(todo)), SweepView(root, specs, min(workers, len(todo))).show)


def _unfinished(root: Path, specs: Sequence[ml_collections.ConfigDict]) -> list[str]:
  """One line per run that is not done: failed (with where to look) or left unfinished by its worker."""
  from scaling import runs

  out = []
  for s in specs:
    status = runs.read_status(root / s.run_id)
    if status["state"] != "done":
      why = f": {status['reason']}" if status.get("reason") else ""
      out.append(f"run {s.run_id} ({s.shape.width}x{s.shape.depth}, C = {s.C:.3g}) is {status['state']}{why}; "
                 f"see {root / s.run_id / 'train.log'}" + (" (--retry_failed trains it again)" if status["state"] == "failed" else ""))
  return out


def _unique_tokens(root: Path, run_ids: Sequence[str]) -> float | None:
  """Unique tokens of the training split, from a finished run's run.json (tokens / epochs)."""
  from scaling import runs

  for rid in run_ids:
    info = runs.read_run_info(root / rid)
    if info.get("epochs"):
      return float(info["tokens_actual"]) / float(info["epochs"])
  return None


def _target_bindings(target: dict[str, Any]) -> list[str]:
  """The part that trains the target run: a one-point grid at the chosen shape and token count, with the
  batch and LR chosen for it (`recipe.within_sweep`) once they are."""
  out = ["sweep.parts = [@isoflop(), @target/grid()]",
         f"target/grid.params = [{float(target['model_params'])!r}]", f"target/grid.tokens = [{int(target['D'])}]"]
  if "global_batch" in target:
    out += [f"size_rules.max_batch = {int(target['global_batch'])}",
            f"target/grid.bindings = ['train.learning_rate = {float(target['learning_rate'])!r}']"]
  return out


def _with_target(name: str, bindings: list[str], prediction: dict[str, Any]) -> tuple:
  """(every run spec, the resolved text) of the sweep with the target run of `prediction` added."""
  from scaling.sweep import cli as sweep_cli

  _, _, specs, text = sweep_cli.expand_file(name, bindings + _target_bindings(prediction["target"]))
  return specs, text


def _target_spec(specs: Sequence[ml_collections.ConfigDict]) -> ml_collections.ConfigDict:
  """The target run's spec among the sweep's."""
  from scaling.demo import analysis

  return next(s for s in specs if s.get("scope", "") == analysis.TARGET_SCOPE)


def _hold_hyperparameters(target: dict[str, Any], spec: ml_collections.ConfigDict, sweep: Any) -> None:
  """Records in `target` the batch and LR it trains with: the size rules' values at its budget, held to the
  sweep's ranges (`recipe.within_sweep`), and says so when the rules' values are left."""
  from scaling.demo import recipe

  batch, lr = recipe.within_sweep(spec.global_batch, spec.learning_rate, sweep)
  target.update(global_batch=batch, learning_rate=lr,
                rules={"global_batch": int(spec.global_batch), "learning_rate": float(spec.learning_rate)})
  if (batch, lr) != (spec.global_batch, spec.learning_rate):
    _say(f"the size rules give the target batch {spec.global_batch} and LR {spec.learning_rate:.4g}, outside what "
         f"the sweep trained; it trains with batch {batch} and LR {lr:.4g}, the nearest the sweep measured "
         "(docs/demo.md)")


def _preflight(specs: Sequence[ml_collections.ConfigDict], kinds: set[str]) -> list[float]:
  """The sweep's budgets, after checking it can give the demo what it needs (UserError before any write)."""
  if kinds != {"isoflop"}:
    raise UserError(f"the demo's sweep must be IsoFLOP parts only, got {', '.join(sorted(kinds))}")
  budgets = sorted({s.budget for s in specs})
  sizes = min(sum(1 for s in specs if s.budget == b) for b in budgets)
  if len(budgets) < 3 or sizes < 3:
    raise UserError(f"the demo needs 3+ IsoFLOP budgets with 3+ sizes each (approach 2 places a minimum per "
                    f"budget, then fits power laws to them); this sweep has {len(budgets)} budget(s), the smallest "
                    f"with {sizes} size(s)")
  return budgets


def _estimate(sweep_spec: Any, specs: Sequence[ml_collections.ConfigDict], target_flops: float) -> str | None:
  """The expected time of the sweep and of the target run, at the sweep's expected MFU."""
  from scaling.console import format_eta
  from scaling.sweep import cli as sweep_cli, table

  per_flop, _ = sweep_cli.seconds_per_flop(sweep_spec.expected_mfu)
  if not per_flop:
    return None
  sweep_flops = sum(table.trained_flops(s) for s in specs)
  return (f"estimate: about {format_eta(sweep_flops * per_flop)} for the sweep ({sweep_flops:.3g} FLOPs) and "
          f"{format_eta(target_flops * per_flop)} for the target run ({target_flops:.3g} FLOPs), at MFU "
          f"{sweep_spec.expected_mfu:g} (sweep.expected_mfu)")


def _prediction_line(prediction: dict[str, Any]) -> str:
  t, a3, loss = prediction["target"], prediction["approach3"], prediction["loss"]
  level = int(round(100 * prediction["level"]))
  interval = f" ({level}% interval {loss['interval'][0]:.4f} to {loss['interval'][1]:.4f})" if "interval" in loss else ""
  a2 = prediction["approach2"]
  return (f"prediction at C = {prediction['C']:.3g}: approach 2 N* = {a2['N']['value']:.3g}, D* = "
          f"{a2['D']['value']:.3g}; approach 3 N* = {a3['N']['value']:.3g}, D* = {a3['D']['value']:.3g}, "
          f"L* = {a3['loss']['value']:.4f}; approach 2's N* rounds to the shape {t['shape']} (N = {t['N']:.3g}) on "
          f"D = {t['D']:,} tokens, where approach 3 predicts the loss {loss['value']:.4f}{interval}")


def demo(args: argparse.Namespace) -> int:
  """Runs the demo's stages, each skipped when already done (the same command resumes)."""
  from scaling import config
  from scaling.demo import analysis, recipe
  from scaling.sweep import cli as sweep_cli, root as root_lib

  started = time.monotonic()
  workers = args.workers if args.workers is not None else max(1, min(2, len(os.sched_getaffinity(0))))
  if workers < 1:
    raise UserError(f"--workers must be at least 1, got {workers}")
  name = SPECS[args.quick]
  sweep_spec, base, specs, text = sweep_cli.expand_file(name, args.gin_bindings)
  settings = config.build(recipe.settings)
  budgets = _preflight(specs, {p.kind for p in sweep_spec.parts})
  root = root_lib.check_root(Path(args.root or ROOTS[args.quick]))  # bad input above writes nothing
  ids = {s.run_id for s in specs}
  _say(f"[1/4] IsoFLOP sweep {name}: {len(budgets)} budgets x {len(specs) // len(budgets)} sizes "
       f"({', '.join(f'{b:.3g}' for b in budgets)} FLOPs, {sweep_spec.convention} convention) into {root}, "
       f"{workers} worker(s)")
  compute = recipe.target_budget(budgets, settings.target_factor)
  estimate = _estimate(sweep_spec, specs, compute)
  if estimate:
    _say(estimate)
  prediction = analysis.read_prediction(root, ids, settings)
  # A prediction made earlier (same runs, same settings) keeps its target run in the root's description.
  all_specs, all_text = _with_target(name, args.gin_bindings, prediction) if prediction else (specs, text)
  root_lib.write(root, all_text, all_specs)
  if args.retry_failed:
    sweep_cli.retry_failed(root, specs)
  code = _train(root, specs, workers)
  if code:
    _say("stopped; run the same command to resume")
    return code
  unfinished = _unfinished(root, specs)
  for line in unfinished:
    _say(line)
  if unfinished:
    return 1

  table = analysis.runs_table(root)
  sweep = table[table["run"].isin(ids)]
  checks = recipe.bracket_failures(sweep)
  for line in checks:
    _say(f"not bracketed: {line}")
  if checks:
    _say("stopping before the target run: a budget whose minimum is at an edge of its sizes biases both fits")
    return 1
  _say(f"[2/4] every budget's minimum is bracketed; fitting approaches 3 and 2 to {len(sweep)} runs "
       f"({settings.bootstrap} bootstrap resamples of runs)")
  cache.enable_compilation_cache()  # the fits compile for ~20 s; a resumed demo reuses them
  df, fit3, fit2 = analysis.fit(root, table, settings, ids)
  p3 = fit3["params"]
  _say("approach 3: L = E + A/N^alpha + B/D^beta with " + ", ".join(f"{k} = {p3[k]:.4g}" for k in ("E", "A", "B", "alpha", "beta")))
  if prediction is None:
    prediction, size = analysis.plan_target(fit3, fit2, compute, base)
    problem = recipe.epochs_failure(prediction["target"]["D"], _unique_tokens(root, sorted(ids)), settings.max_epochs)
    if problem:
      _say(f"stopping before the target run: {problem}")
      return 1
    prediction["target"]["model_params"] = size.params  # the model.params that gives this shape
    prediction["settings"] = analysis.settings_record(settings)
    all_specs, _ = _with_target(name, args.gin_bindings, prediction)
    _hold_hyperparameters(prediction["target"], _target_spec(all_specs), sweep)
    all_specs, all_text = _with_target(name, args.gin_bindings, prediction)
  _say(_prediction_line(prediction))

  target = [_target_spec(all_specs)]
  prediction["target"]["run"] = target[0].run_id
  analysis.write_prediction(root, prediction)  # before the run that tests it starts
  _say(f"[3/4] training the predicted optimum {prediction['target']['shape']} on {target[0].tokens:,} tokens "
       f"({target[0].steps} steps, C = {target[0].C:.3g}) with all cores")
  root_lib.write(root, all_text, all_specs)
  if args.retry_failed:
    sweep_cli.retry_failed(root, target)
  code = _train(root, target, 1)
  if code:
    _say("stopped; run the same command to resume")
    return code
  unfinished = _unfinished(root, target)
  if unfinished:
    _say(unfinished[0])
    return 1

  _say("[4/4] report")
  path, cmp = analysis.analyse(root, settings, (df, fit3, fit2))
  _say(f"report: {path} ({time.monotonic() - started:.0f} s this session)")
  if cmp is None:
    _say(f"the target run {prediction['target']['run']} has no final evaluation to compare with")
    return 1
  print(f"scaling demo: {analysis.error_line(cmp, prediction['level'])}", flush=True)
  return 0
