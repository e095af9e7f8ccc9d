"""One run of a sweep root trained by a cluster job: every process of the job runs this, one per host.

The SLURM launcher starts it with `srun` in each array task, the TPU launcher on every worker of a slice
(`gcloud ... ssh --worker=all`). The processes join one `jax.distributed` job from their environment;
process 0 claims the run (the scheduler already runs each task once; the claim keeps a local
`scaling sweep` on the same root away) and writes `train.log`, status and metrics. Exit status: 0 when the
run is done (or was already), 143 when it stopped at a checkpoint (SIGTERM: preempted, cancelled, out of
time), 1 when it failed, 2 on bad input.

    python -m scaling.launch.task --root ROOT RUN_ID
    python -m scaling.launch.task --root ROOT --runs_file ROOT/slurm/array-1.runs --index $SLURM_ARRAY_TASK_ID
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from scaling import runs, storage
from scaling.errors import UserError
from scaling.launch import distributed

PREEMPTED = 143


def run_id_of(args: argparse.Namespace) -> str:
  """The run this task trains: given, or line `index` of a runs file (one run id per line)."""
  if args.run_id:
    return args.run_id
  if args.runs_file is None or args.index is None:
    raise UserError("give a RUN_ID, or --runs_file and --index")
  ids = Path(args.runs_file).read_text().split()
  if not 0 <= args.index < len(ids):
    raise UserError(f"--index {args.index} is outside {args.runs_file} ({len(ids)} runs)")
  return ids[args.index]


def _agree(value: int) -> int:
  """Process 0's value on every process (a no-op in a one-process job)."""
  import jax
  import numpy as np

  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils

  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def train(root: Path, run_id: str) -> int:
  """Trains the run on all processes of this job; returns the exit status (see the module doc)."""
  import jax

  from scaling.sweep import claims, root as root_lib, worker

  run_dir = root / run_id
  if not (run_dir / "spec.json").exists():
    raise UserError(f"{run_dir}: not a run of the sweep root {root} (no spec.json)")
  lead = jax.process_index() == 0
  spec = root_lib.read_spec(run_dir)
  if spec.parent and runs.read_status(root / spec.parent)["state"] != "done":
    parent = runs.read_status(root / spec.parent)["state"]
    if lead and parent == "failed":
      runs.set_status(run_dir, "failed", 0, f"its parent run {spec.parent} failed")
    if lead:
      print(f"scaling task: {run_id} branches from {spec.parent}, which is {parent}; not trained", file=sys.stderr)
    return 1
  claim = None
  if lead and runs.read_status(run_dir)["state"] != "done":
    claim = claims.try_claim(run_dir)
  go = _agree(int(claim is not None) if lead else 0)
  if not go:
    state = runs.read_status(run_dir)["state"]
    if lead:
      print(f"scaling task: {run_id} is {state}" + ("" if state == "done" else " and held by a live process; not trained"),
            file=sys.stderr, flush=True)
    return 0 if state == "done" else 1
  try:
    record = worker.train_one(root, run_id, log=lead)
  finally:
    if claim is not None:
      claim.release()
  state = runs.read_status(run_dir)["state"]
  if record.get("preempted") or state == "preempted":
    return PREEMPTED
  return 0 if state == "done" else 1


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m scaling.launch.task", description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("run_id", nargs="?")
  parser.add_argument("--runs_file")
  parser.add_argument("--index", type=int)
  parser.add_argument("--distributed", action="store_true",
                      help="join a multi-process job even when the environment names none (a TPU VM: JAX asks its metadata)")
  args = parser.parse_args(argv)
  try:
    joined = distributed.initialize(force=args.distributed)
    if joined:
      print(f"scaling task: multi-process: {joined}", file=sys.stderr, flush=True)
    return train(storage.path(args.root), run_id_of(args))
  except UserError as e:
    print(f"scaling task: error: {e}", file=sys.stderr, flush=True)
    return UserError.exit_code


if __name__ == "__main__":
  sys.exit(main())
