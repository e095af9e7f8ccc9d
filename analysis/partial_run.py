"""Can the curve law predict a run's final eval loss from its first 30%? Families of our own runs, measured.

Each family is one model trained to T steps (the target) and to shorter budgets (finished runs, each with its
own cosine schedule, decaying to 0.1 x peak after a warmup of 5% of the target's steps in every run of the
family, or with --warmup own 5% of each run's own steps), all on the embedded corpus through `scaling train`.
The target is cut back to its first 30% (a preempted run), and the law is fitted on that partial run
together with the finished ones, at the paper's lambda = 0.999 and at the lambda chosen by backtest
(`--lambda_decay=auto`, scaling/fit/curve_backtest.py). The table gives each prediction's error against the
target's observed final eval loss, and the best any lambda of the grid could do (which needs the answer).

  python analysis/partial_run.py --root /tmp/partial_runs [--warmup shared|own] [--families nano:600:200,300 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from scaling import runs
from scaling.fit import curve_backtest, curve_fit, curve_load, curves

FAMILIES = ("nano:600:200,300", "nano:2000:667,1000", "nano:3000:1000,1500", "micro:3000:1000,1500")
SEEN = 0.3
WARMUP = 0.05  # warmup: this fraction of the target's steps in every run ('shared'), or of each run's ('own')


def train(run_dir: Path, size: str, steps: int, warmup: int) -> None:
  """One run of `steps` steps (seq 64 x batch 16 = 1,024 tokens a step, peak LR 0.01 after `warmup` steps, eval
  every 20 steps on 8,192 tokens); a finished run directory is kept."""
  if runs.is_run_dir(run_dir) and runs.read_status(run_dir)["state"] == "done":
    return
  knobs = [f"model.size = '{size}'", "train.seq_len = 64", "train.global_batch = 16", f"train.tokens = {steps * 1024}",
           "train.learning_rate = 0.01", f"optimizer.warmup_steps = {warmup}", "train.eval_every = 20",
           "train.eval_tokens = 8192", "train.log_every = 20", "checkpoint.every_steps = 100000"]
  cmd = [sys.executable, "-m", "scaling", "train", f"--run_dir={run_dir}", *[f"--gin_bindings={k}" for k in knobs]]
  done = subprocess.run(cmd, capture_output=True, text=True)
  if done.returncode:
    raise SystemExit(f"{run_dir}: scaling train failed:\n{done.stderr[-2000:]}")


def cut(run_dir: Path, out: Path, fraction: float) -> Path:
  """A copy of a finished run cut back to `fraction` of its steps, as a preemption would have left it."""
  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  for name in ("run.json", "config.gin", "metrics.jsonl", "status.json"):
    shutil.copy2(run_dir / name, out / name)
  step = int(round(fraction * runs.read_json(run_dir / "run.json")["steps"]))
  runs.truncate_metrics(out, step)
  runs.set_status(out, "preempted", step)
  return out


def final_prediction(data: list[curves.Curve], lam: float, partial: curves.Curve) -> float:
  """The law fitted on `data` at `lam`, evaluated at the partial run's last planned step."""
  record = curve_fit.fit(data, dataclasses.replace(curve_fit.Options(), lam=lam))
  end = curves.Curve(partial.id, partial.grid[-1:], np.ones(1), partial.grid, partial.eta)
  return float(curves.predict(curve_fit.theta_of(record), *curves.features(end, lam))[0])


def family(root: Path, spec: str, warmup_policy: str) -> dict:
  """Train one family, fit it both ways and return the errors of the predicted final eval loss."""
  size, target, shorter = spec.split(":")
  target, shorter = int(target), [int(s) for s in shorter.split(",")]
  warmup = {n: int(round(WARMUP * (target if warmup_policy == "shared" else n))) for n in (target, *shorter)}
  dirs = {n: root / f"{size}_{n}_warmup{warmup[n]}" for n in (target, *shorter)}
  for n, d in dirs.items():
    train(d, size, n, warmup[n])
  observed = [r for r in runs.read_metrics(dirs[target]) if r.get("eval_loss") is not None][-1]["eval_loss"]
  partial_dir = cut(dirs[target], root / f"{dirs[target].name}_first{int(SEEN * 100)}", SEEN)
  data = [curve_load.from_run_dir(partial_dir), *(curve_load.from_run_dir(dirs[n]) for n in shorter)]
  partial = data[0]
  chosen, table = curve_backtest.choose_lambda(data, curve_fit.Options())
  errors = {lam: final_prediction(data, lam, partial) / observed - 1 for lam in curve_backtest.LAMBDA_GRID}
  best = min(errors, key=lambda k: abs(errors[k]))
  return {"family": spec, "observed": observed, "paper": errors[0.999], "chosen": chosen, "auto": errors[chosen],
          "best_lambda": best, "best": errors[best], "backtest": table}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, type=Path)
  parser.add_argument("--families", nargs="+", default=list(FAMILIES), help="size:target_steps:shorter,steps")
  parser.add_argument("--warmup", choices=("shared", "own"), default="shared",
                      help="shared: 5%% of the target's steps in every run; own: 5%% of each run's steps")
  args = parser.parse_args()
  print("| family (size: target steps: finished runs) | observed final | lambda 0.999 | auto (lambda) "
        "| best lambda of the grid |")
  print("| --- | --- | --- | --- | --- |")
  for spec in args.families:
    r = family(args.root, spec, args.warmup)
    print(f"| {spec} | {r['observed']:.4f} | {r['paper']:+.2%} | {r['auto']:+.2%} ({r['chosen']:g}) | "
          f"{r['best']:+.2%} ({r['best_lambda']:g}) |", flush=True)


if __name__ == "__main__":
  main()
