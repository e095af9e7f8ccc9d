"""A sweep worker: one process that claims pending runs of a sweep root and trains them, one after another.

Runs are trained in this process (`loop.run`), so imports and compiled programs are paid once per worker,
not once per run. A run that fails is recorded as `failed` with its reason and the worker goes on; a
SIGTERM stops the current run at a step boundary with a checkpoint (`preempted`) and ends the worker.
A cooldown branch waits until its parent run is done. The worker ends when no run it was given is left
to train; runs claimed by other live processes are waited for, so the worker can take them over if
their holder dies.

    python -m scaling.sweep.worker --root ROOT RUN_ID [RUN_ID ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from scaling import runs, storage
from scaling.errors import UserError
from scaling.sweep import claims, root as root_lib

MAX_ATTEMPTS = 3  # a run whose worker died this many times is recorded as failed instead of retried
POLL_S = 2.0


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
  """Sends this process's stdout and stderr (Python's and the C libraries') to a file, then restores them.

  Python's streams are rebound to the file descriptors too, since whoever started us (a test runner, a
  notebook) may have replaced `sys.stdout`/`sys.stderr` with objects that do not write to fds 1 and 2.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(1), os.dup(2)
  streams = sys.stdout, sys.stderr
  with open(path, "a") as f:
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    try:
      yield
    finally:
      sys.stdout.close()
      sys.stderr.close()
      sys.stdout, sys.stderr = streams
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      os.close(saved[0])
      os.close(saved[1])


@contextlib.contextmanager
def _run_log(run_dir: storage.AnyPath) -> Iterator[None]:
  """Sends this process's output to the run's train.log. On GCS, where the process cannot write to an object,
  it goes to a local file first, whose new output is appended to the run's train.log every
  `runs.REMOTE_FLUSH_S` and when the run stops (at its end, failure or preemption)."""
  log = run_dir / root_lib.TRAIN_LOG
  if not storage.is_remote(log):
    with _output_to(log):
      yield
    return
  local = storage.local_dir(run_dir) / root_lib.TRAIN_LOG
  local.parent.mkdir(parents=True, exist_ok=True)
  local.write_text("")
  mirror, stop = storage.AppendMirror(local, log), threading.Event()
  syncer = threading.Thread(target=_sync_until, args=(mirror, stop), daemon=True)
  syncer.start()
  try:
    with _output_to(local):
      yield
  finally:
    stop.set()
    syncer.join()
    mirror.sync()


def _sync_until(mirror: storage.AppendMirror, stop: threading.Event) -> None:
  """Syncs `mirror` every `runs.REMOTE_FLUSH_S` until `stop`; a failed sync is retried at the next one (the log
  must not stop the run), and the last sync, when the run stops, raises."""
  while not stop.wait(runs.REMOTE_FLUSH_S):
    try:
      mirror.sync()
    except Exception:
      pass


def _fail(run_dir: storage.AnyPath, reason: str) -> None:
  """Records a failure unless the run is already done (a done run is never marked otherwise); process 0 only."""
  import jax

  if jax.process_index() != 0:
    return
  status = runs.read_status(run_dir)
  if status["state"] != "done":
    runs.set_status(run_dir, "failed", status.get("step", 0), reason)


def train_one(root: Path, run_id: str, log: bool = True) -> dict:
  """Trains one run of the sweep in this process from its spec.gin; returns the last record (or {}).

  `log`: this process's output goes to the run's train.log (in a multi-process job, process 0's only).
  """
  from scaling import config, loop

  run_dir = root / run_id
  spec = root_lib.read_spec(run_dir)
  with _run_log(run_dir) if log else contextlib.nullcontext():
    print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {' '.join(root_lib.train_command(root, spec))}",
          flush=True)
    try:
      config.parse([str(run_dir / root_lib.SPEC_GIN)], [])
      return loop.run(run_dir, spec.mesh, branch_from=root_lib.branch_from(root, spec)) or {}
    except UserError as e:
      print(f"scaling train: error: {e}", file=sys.stderr, flush=True)
      _fail(run_dir, str(e).splitlines()[0])
    except Exception as e:  # a run's crash must not end the sweep: record it and go on
      traceback.print_exc()
      _fail(run_dir, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
  return {}


def _blocked(root: Path, spec) -> str | None:
  """Why a run cannot start yet ('wait') or ever ('parent failed ...'); None when it can."""
  if not spec.parent:
    return None
  parent = runs.read_status(root / spec.parent)["state"]
  if parent == "done":
    return None
  if parent == "failed":
    return f"its parent run {spec.parent} failed"
  return "wait"


def work(root: Path, run_ids: Sequence[str], poll_s: float = POLL_S, say=print) -> int:
  """Trains every given run that is not done or failed, as claims allow; returns 0, or 143 after a SIGTERM."""
  stop = {"now": False}
  previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
  # Ctrl-C reaches the whole process group; the launcher turns it into a SIGTERM (checkpoint, `preempted`),
  # so a worker must not die of it mid-step (a KeyboardInterrupt would record the run as failed).
  previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    specs = {rid: root_lib.read_spec(root / rid) for rid in run_ids}
    while not stop["now"]:
      left = False
      for rid, spec in specs.items():
        run_dir = root / rid
        if runs.read_status(run_dir)["state"] in ("done", "failed"):
          continue
        blocked = _blocked(root, spec)
        if blocked == "wait":
          left = True
          continue
        if blocked:
          _fail(run_dir, blocked)
          continue
        claim = claims.try_claim(run_dir)
        if claim is None:
          left = True  # another live process holds it; it may die, so keep watching
          continue
        try:
          if runs.read_status(run_dir)["state"] in ("done", "failed"):
            continue
          if claim.record["attempt"] > MAX_ATTEMPTS:
            _fail(run_dir, f"its worker died {MAX_ATTEMPTS} times while training it")
            continue
          say(f"worker {os.getpid()}: training {rid}" + (" (taking over a dead claim)" if claim.taken_over else ""))
          record = train_one(root, rid)
          state = runs.read_status(run_dir)["state"]
          say(f"worker {os.getpid()}: {rid} {state}")
          if record.get("preempted") or state == "preempted":
            stop["now"] = True
            break
        finally:
          claim.release()
        left = True  # a run finished: look at the list again from the start (branches may be unblocked)
        break
      else:
        if not left:
          return 0
        time.sleep(poll_s)
    return 143
  finally:
    signal.signal(signal.SIGTERM, previous)
    signal.signal(signal.SIGINT, previous_int)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m scaling.sweep.worker", description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("run_ids", nargs="+")
  args = parser.parse_args(argv)
  from scaling.sweep import local

  local.bind_to_launcher()
  try:
    return work(storage.path(args.root), args.run_ids, say=lambda m: print(m, flush=True))
  except UserError as e:
    print(f"scaling sweep worker: error: {e}", file=sys.stderr)
    return UserError.exit_code


if __name__ == "__main__":
  sys.exit(main())
