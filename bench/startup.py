"""Start-up cost of a run: process start to the first finished train step, cold and warm, beside the step time.

Runs `scaling train` on the default experiment (a short budget) as a user would, in subprocesses:
- cold: a fresh cache directory (no JAX compilation cache, no cached `xla` FLOP count, no CPU peak);
- warm: the same cache directory again, into a new run directory (what every run of a sweep after the
  first one pays);
- neighbour: warm, but with twice the token budget and another peak LR (a sweep's neighbour; the
  schedule is an argument of the compiled step, so this should cost what a warm start costs).
The corpus is prepared once beforehand in both cases (its cost is reported by bench/data.py). Each
figure comes from the trainer's own line "first step done X s after process start (Y s of it the
step-0 evaluation)", so both include Python and library imports. The step-0 evaluation is part of the
run's measurements rather than overhead, and is printed apart. The step time is the median
`step_time_s` of the warm run's records. Goal: warm start-up under 10 s on 2 CPU cores.
Last line: {"metric": "startup_warm_s", "value": ..., ...}.

  python bench/startup.py [--tokens 131072] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRST_STEP = re.compile(r"first step done ([\d.]+) s after process start[^(]*\(([\d.]+) s of it the step-0 evaluation\)")


def start_once(run_dir: Path, env: dict, tokens: int, bindings: list[str]) -> tuple[float, float, list[dict]]:
  """(seconds to the first step, seconds of the step-0 evaluation, metrics records) of one `scaling train`."""
  args = [sys.executable, "-m", "scaling", "train", f"--run_dir={run_dir}", f"--gin_bindings=train.tokens = {tokens}"]
  args += [f"--gin_bindings={b}" for b in bindings]
  out = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
  if out.returncode != 0:
    raise SystemExit(f"scaling train failed:\n{out.stderr[-3000:]}")
  match = FIRST_STEP.search(out.stderr)
  if not match:
    raise SystemExit(f"no start-up line in the output:\n{out.stderr[-3000:]}")
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  return float(match.group(1)), float(match.group(2)), records


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokens", type=int, default=131072, help="train.tokens of each run (default: 32 steps)")
  parser.add_argument("--repeats", type=int, default=2, help="warm starts; the best is reported")
  parser.add_argument("--neighbour_lr", type=float, default=3e-3, help="peak LR of the neighbour run")
  parser.add_argument("--gin_bindings", action="append", default=[], help="extra bindings for every run")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCALING_CACHE_DIR": str(tmp / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    prepare = [sys.executable, "-c", "from scaling.data import make_dataset; make_dataset()"]
    subprocess.run(prepare, env=env, cwd=REPO, check=True, capture_output=True)
    cold_s, cold_eval_s, _ = start_once(tmp / "cold", env, args.tokens, args.gin_bindings)
    warm = [start_once(tmp / f"warm{i}", env, args.tokens, args.gin_bindings) for i in range(args.repeats)]
    neighbour = [f"train.learning_rate = {args.neighbour_lr}"] + args.gin_bindings
    next_s, next_eval_s, _ = start_once(tmp / "neighbour", env, 2 * args.tokens, neighbour)
  warm_s, warm_eval_s, records = min(warm, key=lambda w: w[0])
  step_s = statistics.median(r["step_time_s"] for r in records if "step_time_s" in r)
  print(f"cold start: {cold_s:.2f} s to the first step ({cold_eval_s:.2f} s of it the step-0 evaluation)")
  print(f"warm start: {warm_s:.2f} s to the first step ({warm_eval_s:.2f} s of it the step-0 evaluation)")
  print(f"neighbour:  {next_s:.2f} s to the first step ({next_eval_s:.2f} s of it the step-0 evaluation)")
  print(f"train step: {step_s * 1e3:.1f} ms; warm start-up = {warm_s / step_s:.0f} steps, "
        f"cold/warm = {cold_s / warm_s:.2f}x")
  print(json.dumps({"metric": "startup_warm_s", "value": round(warm_s, 3), "cold_s": round(cold_s, 3),
                    "warm_excluding_eval_s": round(warm_s - warm_eval_s, 3), "step_time_s": round(step_s, 5),
                    "cold_over_warm": round(cold_s / warm_s, 3), "neighbour_s": round(next_s, 3),
                    "goal_s": 10.0}))


if __name__ == "__main__":
  main()
