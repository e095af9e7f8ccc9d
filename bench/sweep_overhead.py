"""What a sweep pays beyond training: per-run start-up, and the sweep's efficiency.

1. Per-run overhead with a warm compilation cache: the sweep's first run is trained once by `scaling train`
   in a fresh process to warm the cache, then again into a new run directory; the figure is process start
   to the first finished step (status.json `startup_s`), printed beside that run's training time.
2. Sweep efficiency: the sweep (default configs/sweeps/cpu_isoflop.gin, `--workers 2`) runs into a fresh
   root. For each run, its stepping time is the sum over its metrics records of step_time_s x steps (the
   trainer times steps only, not evaluations or saves). Efficiency = the runs' stepping time over
   (workers x wall time): the share of the sweep's worker time spent stepping. Equivalently, the useful
   FLOPs over the wall time, divided by the FLOP/s the runs reach while stepping (summed over workers).
   Goal >= 0.90. Also printed: the median in-worker start-up per run (status.json `run_startup_s`:
   loop.run called to first step, step-0 evaluation included) and the evaluation time.
Both use the machine's persistent JAX compilation cache as it is (a sweep's second run of a shape hits it).
Last line: {"metric": "sweep_efficiency", "value": ..., ...}.

  python bench/sweep_overhead.py [--spec configs/sweeps/cpu_isoflop.gin] [--workers 2] [--gin_bindings ...] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scaling import config, runs  # noqa: E402
from scaling.sweep import expand, root as root_lib  # noqa: E402


def stepping_seconds(records: list[dict]) -> float:
  """Seconds a run spent in train steps: each record's mean step time x the steps since the previous record."""
  total, previous = 0.0, 0
  for r in records:
    if r.get("step_time_s") is not None:
      total += r["step_time_s"] * (r["step"] - previous)
    previous = r["step"]
  return total


def run_overhead(spec_file: str, bindings: list[str], env: dict, work: Path) -> dict:
  """Process start to first step of the sweep's first run, first and then warm, beside its training time."""
  sweep, base = expand.load([spec_file], bindings)
  first = expand.expand(sweep, base)[0]
  root = work / "one"
  root_lib.write(root, config.inline_includes(spec_file), [first])
  out = {}
  for label in ("first", "warm"):
    run_dir = work / f"run_{label}"
    args = [sys.executable, "-m", "scaling", "train", f"--gin_file={root / first.run_id / root_lib.SPEC_GIN}",
            f"--run_dir={run_dir}"]
    subprocess.run(args, env=env, cwd=REPO, capture_output=True, check=True, timeout=3600)
    status = runs.read_status(run_dir)
    out[label] = {"startup_s": status["startup_s"], "training_s": stepping_seconds(runs.read_metrics(run_dir))}
  return {"run": first.run_id, **out}


def sweep_efficiency(spec_file: str, bindings: list[str], workers: int, env: dict, root: Path) -> dict:
  args = [sys.executable, "-m", "scaling", "sweep", spec_file, f"--root={root}", f"--workers={workers}",
          *(f"--gin_bindings={b}" for b in bindings)]
  start = time.perf_counter()
  done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if done.returncode != 0:
    raise SystemExit(f"scaling sweep failed:\n{done.stderr[-3000:]}")
  stepping, flops, rates, startups, evals = 0.0, 0.0, [], [], []
  for spec in root_lib.read_specs(root):
    run_dir = root / spec.run_id
    records = runs.read_metrics(run_dir)
    seconds = stepping_seconds(records)
    stepping += seconds
    flops += spec.C
    rates.append(spec.C / seconds)
    status = runs.read_status(run_dir)
    startups.append(status.get("run_startup_s", float("nan")))
    evals.append(status.get("initial_eval_s", float("nan")))
  return {"runs": len(rates), "workers": workers, "wall_s": wall, "stepping_s": stepping,
          "efficiency": stepping / (workers * wall),
          "flops_ratio": flops / wall / (workers * statistics.fmean(rates)),
          "useful_flops": flops, "mean_run_flops_per_s": statistics.fmean(rates),
          "median_run_startup_s": statistics.median(startups), "median_initial_eval_s": statistics.median(evals)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--spec", default="configs/sweeps/cpu_isoflop.gin")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--gin_bindings", action="append", default=[])
  parser.add_argument("--skip_sweep", action="store_true", help="measure the per-run overhead only")
  parser.add_argument("--root", default=None, help="keep the sweep root here (for `scaling fit ROOT`); default: a temp dir")
  args = parser.parse_args()
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  with tempfile.TemporaryDirectory(prefix="sweep_overhead_") as tmp:
    work = Path(tmp)
    overhead = run_overhead(args.spec, args.gin_bindings, env, work)
    warm = overhead["warm"]
    print(f"per-run overhead (warm compilation cache): {warm['startup_s']:.1f} s from process start to the first "
          f"step, beside {warm['training_s']:.1f} s of training ({warm['startup_s'] / warm['training_s']:.3f} of it); "
          f"first start {overhead['first']['startup_s']:.1f} s")
    result = {"metric": "sweep_efficiency", "value": None, "per_run_overhead_warm_s": warm["startup_s"],
              "run_training_s": warm["training_s"], "per_run_overhead_first_s": overhead["first"]["startup_s"]}
    if not args.skip_sweep:
      eff = sweep_efficiency(args.spec, args.gin_bindings, args.workers, env, Path(args.root) if args.root else work / "sweep")
      print(f"sweep: {eff['runs']} runs, {eff['workers']} workers, wall {eff['wall_s']:.0f} s, stepping "
            f"{eff['stepping_s']:.0f} worker-s: efficiency {eff['efficiency']:.3f} (useful FLOPs / wall / summed "
            f"stepping FLOP/s: {eff['flops_ratio']:.3f}); in-worker start-up per run {eff['median_run_startup_s']:.1f} s "
            f"(median; step-0 evaluation {eff['median_initial_eval_s']:.1f} s of it)")
      result.update(value=round(eff["efficiency"], 4), **{k: (round(v, 4) if isinstance(v, float) else v)
                                                          for k, v in eff.items() if k != "efficiency"})
    print(json.dumps(result))


if __name__ == "__main__":
  main()
