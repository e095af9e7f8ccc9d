"""`scaling train`: train one run from gin files into a run directory."""

from __future__ import annotations

import argparse
import sys

from scaling import config


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "train",
      help="train one run into a run directory",
      description="Train one run. With no --gin_file, uses configs/experiments/default.gin.",
  )
  p.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable; includes allowed)")
  p.add_argument("--gin_bindings", action="append", default=[], help="gin binding, e.g. 'train.tokens = 1e6' (repeatable)")
  p.add_argument("--run_dir", required=True, help="the run directory to write (layout: docs/architecture.md)")
  p.add_argument("--mesh", default="-1x1x1", help="(data)x(fsdp)x(tensor) device mesh; -1 fills the rest")
  p.add_argument(
      "--branch_from",
      default=None,
      metavar="OLD_DIR[@STEP]",
      help="start from another run's checkpoint (params, optimizer, data position; newest unless @STEP), "
      "e.g. a WSD cooldown with a new train.tokens; run.json records the parent",
  )
  p.add_argument(
      "--distributed",
      action="store_true",
      help="join a multi-process job even when the environment names none (JAX's detection, e.g. a TPU VM); "
      "implied by JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID, by srun with several tasks, "
      "and by TPU_WORKER_ID + TPU_WORKER_HOSTNAMES",
  )
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  import jax  # noqa: F401  (imported here so `scaling --help` stays fast)

  from scaling import loop
  from scaling.launch import distributed

  gin_files = args.gin_file or [str(config.DEFAULT_EXPERIMENT)]
  config.parse(gin_files, args.gin_bindings)
  joined = distributed.initialize(force=args.distributed)
  if joined and jax.process_index() == 0:
    print(f"scaling train: multi-process: {joined}", file=sys.stderr, flush=True)
  record = loop.run(args.run_dir, args.mesh, branch_from=args.branch_from)
  if jax.process_index() == 0 and record and not record.get("preempted"):
    shown = {k: record[k] for k in ("step", "train_loss", "eval_loss", "eval_bits_per_byte") if k in record}
    print("scaling train: done " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
  return 0
