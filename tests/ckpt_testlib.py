"""Shared by the checkpoint, resume and preemption tests: a tiny run, subprocess launches, and two drivers.

Runs go through the real `python -m scaling train` in subprocesses that share one persistent XLA
compilation cache and one prepared corpus, so a restart costs seconds. Run as a script, this module is
a driver for what the CLI cannot do: `poison RUN_DIR STEPS BINDING...` trains with NaN weights in the
batches drawn at the given 1-based positions; `meshes DIR` saves on a 2x2x2 mesh and restores onto
1x1x8 and one device (needs 8 host devices), printing JSON.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scaling import runs

REPO = Path(__file__).resolve().parent.parent
GIN_FILES = ("configs/models/gpt.gin", "configs/data/stdlib.gin", "configs/optim/adamw_cosine.gin")
# 480 steps of 8 x 32 tokens; records every 5 steps, evaluation every 80, a checkpoint every 16 steps (so
# most checkpoints fall inside a record's window, and resuming from them must carry the window over).
TINY = (
    "model.width = 32", "model.depth = 2", "model.heads = 2",
    "train.tokens = 122880", "train.global_batch = 8", "train.seq_len = 32",
    "train.log_every = 5", "train.eval_every = 80", "train.eval_tokens = 1024",
    "checkpoint.every_steps = 16", "checkpoint.every_minutes = 0", "checkpoint.keep_every = 80",
)
# Keys of a metrics record that do not depend on timing: a resumed run must reproduce them exactly.
CURVE_KEYS = ("step", "tokens", "train_loss", "grad_norm", "lr", "eval_loss", "eval_bits_per_byte")


@pytest.fixture(scope="session")
def scaling_env() -> dict[str, str]:
  """Environment for subprocess runs: this checkout importable, and the session's corpus and compilation cache
  (conftest.SHARED, one for all the xdist workers: the corpus is prepared under a file lock)."""
  root = Path(os.environ["SCALING_TEST_SHARED"])
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORDINATOR"))}
  env.update(
      PYTHONPATH=str(REPO),
      XLA_FLAGS="--xla_force_host_platform_device_count=1",  # one device per process unless a test says more
      SCALING_DATA_DIR=str(root / "data"),
      JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )
  return env


def train_args(run_dir: Path, *bindings: str, extra: tuple[str, ...] = ()) -> list[str]:
  """The `scaling train` command line of the tiny run (later bindings override TINY)."""
  args = [sys.executable, "-m", "scaling", "train", f"--run_dir={run_dir}", *extra]
  args += [f"--gin_file={f}" for f in GIN_FILES]
  args += [f"--gin_bindings={b}" for b in (*TINY, *bindings)]
  return args


def launch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
  """Starts a command in the repository with stdout and stderr going to `log`."""
  with open(log, "w") as f:
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)


def run_to_end(args: list[str], env: dict[str, str], log: Path, timeout: float = 300) -> str:
  """Runs a command to completion; returns its output, failing the test on a non-zero exit."""
  proc = launch(args, env, log)
  proc.wait(timeout=timeout)
  output = log.read_text()
  assert proc.returncode == 0, output[-3000:]
  return output


def messages(output: str) -> list[str]:
  """The `scaling train: ...` lines of a run's output."""
  return [line for line in output.splitlines() if line.startswith("scaling train:")]


def session_once(name: str, make: Callable[[Path], None]) -> Path:
  """The directory `name` of the session's shared directory (conftest.SHARED), filled by `make(directory)` once
  per test session: under a file lock, so the xdist workers that need it share it. Copy what you change."""
  path = Path(os.environ["SCALING_TEST_SHARED"]) / name
  with open(f"{path}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (path / ".made").exists():
      shutil.rmtree(path, ignore_errors=True)
      path.mkdir()
      make(path)
      (path / ".made").touch()
  return path


def trained_once(name: str, args: Callable[[Path], list[str]], env: dict[str, str]) -> Path:
  """The run directory `name` (its run id) trained to the end by the command `args(run_dir)`, once per test
  session (session_once)."""
  return session_once(name, lambda d: run_to_end(args(d / name), env, d / "train.log")) / name


def curve(run_dir: Path) -> list[dict]:
  """metrics.jsonl without its timing keys."""
  records = runs.read_metrics(run_dir)
  return [{k: r[k] for k in CURVE_KEYS if k in r} for r in records]


def committed_steps(run_dir: Path) -> list[int]:
  """Checkpoint steps whose directories are in place (committed: on a local disk Orbax renames a finished save)."""
  from scaling import checkpoint

  return checkpoint.step_directories(run_dir)


def unfinished_saves(run_dir: Path) -> list[str]:
  directory = Path(run_dir) / "checkpoints"
  return sorted(p.name for p in directory.iterdir() if "orbax-checkpoint-tmp" in p.name) if directory.exists() else []


def tensorboard_steps(run_dir, tag: str = "train_loss") -> list[int]:
  """The steps of every `tag` scalar in tb/ (all event files, local or gs://), in the name order TensorBoard reads."""
  import struct

  from tensorboardX.proto import event_pb2

  from scaling import storage

  steps = []
  for path in sorted((storage.path(str(run_dir)) / "tb").iterdir(), key=lambda p: p.name):
    data, offset = path.read_bytes(), 0
    while offset < len(data):  # TFRecord: length (8 bytes), its CRC (4), payload, payload CRC (4)
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      steps += [event.step for value in event.summary.value if value.tag == tag]
  return steps


def saved_arrays(run_dir: Path, step: int) -> list[np.ndarray]:
  """The state arrays of one checkpoint, read back with Orbax (flattened, in tree order)."""
  import jax
  import orbax.checkpoint as ocp

  tree = ocp.StandardCheckpointer().restore(Path(run_dir).absolute() / "checkpoints" / str(step) / "state")
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _poison(run_dir: str, positions: str, bindings: list[str]) -> None:
  """Trains the tiny run with NaN weights in the batches drawn at `positions` (1-based, comma-separated)."""
  import grain

  from scaling import config, loop
  from scaling.errors import UserError

  poisoned = {int(p) for p in positions.split(",")}

  class PoisonedStream(grain.DatasetIterator):
    """Passes batches through, with NaN weights at the poisoned positions (so that step's loss is NaN)."""

    def __init__(self, parent):
      super().__init__(parent)
      self._drawn = 0

    def __next__(self):
      batch = next(self._parent)
      self._drawn += 1
      if self._drawn in poisoned:
        batch = dict(batch, weights=np.full_like(batch["weights"], np.nan))
      return batch

    def get_state(self):
      return {"parent": self._parent.get_state(), "drawn": self._drawn}

    def set_state(self, state):
      self._parent.set_state(state["parent"])
      self._drawn = state["drawn"]

  config.parse(list(GIN_FILES), [*TINY, *bindings])
  try:
    loop.run(run_dir, stream_wrapper=PoisonedStream)
  except UserError as e:
    print(f"scaling train: error: {e}", file=sys.stderr)
    sys.exit(UserError.exit_code)


def _meshes(work_dir: str) -> None:
  """Saves after 3 steps on 2x2x2, restores onto 2x2x2, 1x1x8 and one device; prints losses per mesh."""
  import jax

  from scaling import checkpoint, config, loop, sharding, train

  config.parse(list(GIN_FILES), list(TINY))
  cfgs = loop.resolve_configs()
  t = cfgs.train
  data = cfgs.dataset.train_iterator(seq_len=t.seq_len, global_batch=t.global_batch, seed=t.seed)
  batches = [next(data) for _ in range(3)]
  ckpt_cfg = checkpoint.CheckpointConfig(every_steps=0, every_minutes=0)

  def setup(shape, devices):
    mesh = sharding.make_mesh(shape, devices)
    program = train.build_program(cfgs.model, cfgs.optimizer, t, mesh)
    ckpts = checkpoint.Checkpointer(Path(work_dir) / "checkpoints", ckpt_cfg, program.abstract_state,
                                    program.state_shardings, mesh, {"test": "meshes"})
    return program, train.compile_train_step(program, t), ckpts

  program, step_fn, ckpts = setup((2, 2, 2), jax.devices())
  state = train.init_state(program, t.seed)
  for batch in batches[:3]:
    state, _ = step_fn(state, sharding.global_batch(batch, program.mesh))
  ckpts.save(3, state, data, checkpoint.Progress())
  ckpts.close()
  batches += [next(data) for _ in range(3)]
  results = {}
  for name, shape, devices in (("2x2x2", (2, 2, 2), jax.devices()), ("1x1x8", (1, 1, 8), jax.devices()),
                               ("1", (1, 1, 1), jax.devices()[:1])):
    program, step_fn, ckpts = setup(shape, devices)
    restored = ckpts.restore_latest(data)
    state, losses = restored.state, []
    for batch in batches[3:]:
      state, metrics = step_fn(state, sharding.global_batch(batch, program.mesh))
      losses.append(float(metrics["train_loss"]))
    ckpts.close()
    embed = restored.state.params["embed"].get_value()
    results[name] = {"step": restored.step, "losses": losses, "devices": len(embed.sharding.device_set),
                     "mesh": dict(embed.sharding.mesh.shape), "data_step": data.get_state()["step"]}
  print(json.dumps(results))


if __name__ == "__main__":
  command, *rest = sys.argv[1:]
  if command == "poison":
    _poison(rest[0], rest[1], rest[2:])
  elif command == "meshes":
    _meshes(rest[0])
  else:
    raise SystemExit(f"unknown command {command!r}")
