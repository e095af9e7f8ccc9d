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
from pathlib import Path

from scaling.errors import UserError

SPECS = {False: "sweeps/demo.gin", True: "sweeps/demo_quick.gin"}
ROOTS = {False: "runs/demo", True: "runs/demo_quick"}


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "demo", help="predict a 10x larger run from a small IsoFLOP sweep, train it, and report the error",
      description="IsoFLOP sweep -> approach 2/3 fits -> prediction at 10x the largest budget -> that run "
                  "trained -> report (docs/demo.md). Run the same command again to resume.")
  p.add_argument("--root", default=None, help="the sweep root (default runs/demo; runs/demo_quick with --quick)")
  p.add_argument("--quick", action="store_true", help="the same path at toy sizes, in a few minutes (the CI smoke test)")
  p.add_argument("--workers", type=int, default=None,
                 help="sweep worker processes (default: one per CPU core, at most 2); the target run gets all cores")
  p.add_argument("--gin_bindings", action="append", default=[], help="extra binding, e.g. 'demo.bootstrap = 500'")
  p.set_defaults(func=demo)


def _say(line: str) -> None:
  print(f"scaling demo: {line}", file=sys.stderr, flush=True)


def _train(root: Path, specs, workers: int) -> int:
  """Trains the specs' runs that are not done (longest first) with a live view; returns the exit status."""
  from scaling import runs
  from scaling.sweep import cli as sweep_cli, local
  from scaling.sweep.view import SweepView

  states = {s.run_id: runs.read_status(root / s.run_id)["state"] for s in specs}
  todo = sweep_cli.longest_first(specs, states)
  if not todo:
    return 0
  return local.run(root, todo, min(workers, len(todo)), SweepView(root, specs, min(workers, len(todo))).show)


def _failed(table) -> list[str]:
  return [f"run {r.run} ({r.shape}, budget {r.budget:.3g}) failed: see {r.run}/train.log"
          for r in table.itertuples() if r.state == "failed"]


def _unique_tokens(root: Path, run_ids) -> float | None:
  """Unique tokens of the training split, from a finished run's run.json (tokens / epochs)."""
  from scaling import runs

  for rid in run_ids:
    info = runs.read_run_info(root / rid)
    if info.get("epochs"):
      return float(info["tokens_actual"]) / float(info["epochs"])
  return None


def demo(args: argparse.Namespace) -> int:
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
  kinds = {p.kind for p in sweep_spec.parts}
  if kinds != {"isoflop"}:
    raise UserError(f"the demo's sweep must be IsoFLOP parts only, got {', '.join(sorted(kinds))}")
  root = root_lib.check_root(Path(args.root or ROOTS[args.quick]))  # bad input above writes nothing
  budgets = sorted({s.budget for s in specs})
  _say(f"[1/4] IsoFLOP sweep {name}: {len(budgets)} budgets x {len(specs) // max(len(budgets), 1)} sizes "
       f"({', '.join(f'{b:.3g}' for b in budgets)} FLOPs, {sweep_spec.convention} convention) into {root}, "
       f"{workers} worker(s)")
  per_flop, _ = sweep_cli.seconds_per_flop(sweep_spec.expected_mfu)
  if per_flop:
    from scaling.console import format_eta
    from scaling.sweep import table as table_lib

    sweep_flops = sum(table_lib.trained_flops(s) for s in specs)
    target_flops = recipe.target_budget(budgets, settings.target_factor)
    _say(f"estimate: about {format_eta(sweep_flops * per_flop)} for the sweep ({sweep_flops:.3g} FLOPs) and "
         f"{format_eta(target_flops * per_flop)} for the target run ({target_flops:.3g} FLOPs), at MFU "
         f"{sweep_spec.expected_mfu:g} (sweep.expected_mfu)")
  root_lib.write(root, text, specs)
  code = _train(root, specs, workers)
  if code:
    _say("stopped; run the same command to resume")
    return code
  table = analysis.runs_table(root)
  sweep = table[table["run"].isin({s.run_id for s in specs})]
  failed = _failed(sweep)
  for line in failed:
    _say(line)
  if failed:
    return 1

  checks = recipe.bracket_failures(sweep.dropna(subset=["loss"]))
  if checks:
    for line in checks:
      _say(f"not bracketed: {line}")
    _say("stopping before the target run: a budget whose minimum is at an edge of its sizes biases both fits")
    return 1
  _say(f"[2/4] every budget's minimum is bracketed; fitting approaches 3 and 2 to {len(sweep)} runs "
       f"({settings.bootstrap} bootstrap resamples of runs)")
  df, fit3, fit2 = analysis.fit(root, table, settings, {s.run_id for s in specs})
  p3 = fit3["params"]
  _say("approach 3: L = E + A/N^alpha + B/D^beta with " + ", ".join(f"{k} = {p3[k]:.4g}" for k in ("E", "A", "B", "alpha", "beta")))
  compute = recipe.target_budget(budgets, settings.target_factor)
  prediction = analysis.read_prediction(root, set(fit3["runs"]))
  if prediction is None:
    prediction, size = analysis.plan_target(fit3, fit2, compute, base)
    problem = recipe.epochs_failure(prediction["target"]["D"], _unique_tokens(root, sweep["run"]), settings.max_epochs)
    if problem:
      raise UserError(problem)
    prediction["target"]["model_params"] = size.params  # model.params that gives this shape
    analysis.write_prediction(root, prediction)
  t, a3 = prediction["target"], prediction["approach3"]
  loss = prediction["loss"]
  level = int(round(100 * settings.level))
  _say(f"prediction at C = {compute:.3g}: N* = {a3['N']['value']:.3g}, D* = {a3['D']['value']:.3g}, "
       f"L* = {a3['loss']['value']:.4f}; the nearest shape {t['shape']} (N = {t['N']:.3g}) on D = {t['D']:,} tokens: "
       f"loss {loss['value']:.4f}" + (f" ({level}% interval {loss['interval'][0]:.4f} to {loss['interval'][1]:.4f})"
                                      if "interval" in loss else ""))

  bindings = args.gin_bindings + _target_bindings_for(t)
  _, _, all_specs, text_all = sweep_cli.expand_file(name, bindings)
  target = [s for s in all_specs if s.get("scope", "") == analysis.TARGET_SCOPE]
  _say(f"[3/4] training the predicted optimum {t['shape']} on {t['D']:,} tokens ({target[0].steps} steps, "
       f"C = {target[0].C:.3g}) with all cores")
  root_lib.write(root, text_all, all_specs)
  code = _train(root, target, 1)
  if code:
    _say("stopped; run the same command to resume")
    return code
  table = analysis.runs_table(root)
  failed = _failed(table[table["run"] == target[0].run_id])
  if failed:
    _say(failed[0])
    return 1

  _say("[4/4] report")
  path, cmp = analysis.analyse(root, settings, (df, fit3, fit2))
  _say(f"report: {path} ({time.monotonic() - started:.0f} s this session)")
  print(f"scaling demo: {analysis.error_line(cmp, settings.level)}", flush=True)
  return 0


def _target_bindings_for(target: dict) -> list[str]:
  return ["sweep.parts = [@isoflop(), @target/grid()]",
          f"target/grid.params = [{float(target['model_params'])!r}]", f"target/grid.tokens = [{int(target['D'])}]"]
