"""The training loop of one run: configs from gin, data, sharded state, steps, evaluation, run directory.

Everything that can fail on bad input (gin values, mesh, batch divisibility) is checked before any
device work, so a typo costs seconds and never touches an existing run's files.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scaling import cache, checkpoint, config, flops, hardware, runs, sharding, storage
from scaling.data import pipeline
from scaling.console import TrainDisplay
from scaling.errors import UserError
from scaling.metrics import MetricsWriter
from scaling.model import ModelConfig, param_counts, tree_param_counts
from scaling.optim import OptimizerConfig, optimizer_config
from scaling.preemption import PreemptionWatch
from scaling.sizes import model_config
from scaling.sweep.spec import sweep_point
from scaling.train import (
    TrainConfig,
    build_program,
    compile_eval_step,
    compile_train_step,
    counts_xla_flops,
    evaluate,
    init_state,
    lower_train_step,
    train_config,
    xla_flops_per_token,
)

VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets", "gin-config")


@dataclasses.dataclass
class RunConfigs:
  """Everything gin decides for a run, validated."""

  train: TrainConfig
  optimizer: OptimizerConfig
  model: ModelConfig
  dataset: object


def resolve_configs() -> RunConfigs:
  """Calls every gin configurable once; bad values become a UserError naming the knob."""
  from scaling.data import make_dataset  # the data layer pulls in tfds/grain: import on use

  train_cfg = config.build(train_config)
  opt_cfg = config.build(optimizer_config)
  dataset = config.build(make_dataset)
  model_cfg = config.build(model_config, vocab_size=dataset.tokenizer.vocab_size)
  return RunConfigs(train_cfg, opt_cfg, model_cfg, dataset)


def check_fits_mesh(train_cfg: TrainConfig, mesh_shape: tuple[int, int, int]) -> None:
  """The batch (and each microbatch) must split evenly over the data and fsdp axes."""
  shards = mesh_shape[0] * mesh_shape[1]
  micro = train_cfg.global_batch // train_cfg.grad_accum
  if micro % shards:
    raise UserError(
        f"train.global_batch={train_cfg.global_batch} (microbatch {micro} with train.grad_accum="
        f"{train_cfg.grad_accum}) does not split over data x fsdp = {shards} devices"
    )
  if jax.process_count() > 1 and train_cfg.global_batch % jax.process_count():
    raise UserError(f"train.global_batch={train_cfg.global_batch} does not split over {jax.process_count()} processes")


def _versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for name in VERSIONED:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def run_info(run_dir: Path, cfgs: RunConfigs, mesh_shape, xla_per_token: float | None, peak, peak_source: str) -> dict:
  """run.json: identity, sizes and the FLOP conventions of this run (docs/architecture.md)."""
  t, m = cfgs.train, cfgs.model
  counts = param_counts(m)
  per_token = flops.flops_per_token(m, t.seq_len)
  per_token["xla"] = xla_per_token
  tokenizer = cfgs.dataset.tokenizer
  steps, tokens_actual, rounding = t.plan
  return {
      "run_id": run_dir.name,
      "parent": None,
      "params_total": counts["total"],
      "params_embedding": counts["embedding"],
      "params_non_embedding": counts["non_embedding"],
      "params_convention": "embedding = input table + output layer (once if tied); non_embedding = the rest",
      "tokens_planned": t.tokens,
      "tokens_actual": tokens_actual,
      "tokens_rounding": rounding,
      "steps": steps,
      "tokens_per_step": t.tokens_per_step,
      "flops_per_token": per_token,
      "flops_convention_mfu": flops.MFU_CONVENTION,
      "peak_flops_per_s": peak,
      "peak_source": peak_source,
      "seq_len": t.seq_len,
      "global_batch": t.global_batch,
      "mesh": dict(zip(sharding.MESH_AXES, mesh_shape)),
      "devices": {"count": jax.device_count(), "kind": jax.devices()[0].device_kind, "processes": jax.process_count()},
      "seed": t.seed,
      "loss_unit": "nats per token",
      "tokenizer": tokenizer.identity(),
      "dataset": cfgs.dataset.name,
      "dataset_info": cfgs.dataset.info,
      "unique_tokens": t.unique_tokens,
      "epochs": cfgs.dataset.epochs(tokens_actual, t.seq_len, t.global_batch, t.unique_tokens),
      "model": dataclasses.asdict(m),
      "train": dataclasses.asdict(t),
      "optimizer": dataclasses.asdict(cfgs.optimizer),
      "versions": _versions(),
      "sweep": sweep_point(),
  }


def _device_batches(batches: list[dict], mesh) -> list[dict]:
  return [sharding.global_batch(b, mesh) for b in batches]


def _reporter(is_writer: bool) -> Callable[[str], None]:
  """Prints one `scaling train: ...` line on stderr, on process 0 only."""

  def say(message: str) -> None:
    if is_writer:
      print(f"scaling train: {message}", file=sys.stderr, flush=True)

  return say


# Settings that change what is measured or when, but not the trained function: a run may resume with others.
CADENCE_KNOBS = ("eval_every", "eval_tokens", "log_every")
# What a branch must share with its parent: the model, the data and its order, and the batch geometry.
BRANCH_KEYS = ("model", "dataset", "tokenizer", "seed")
BRANCH_TRAIN_KNOBS = ("seq_len", "global_batch", "seed", "unique_tokens")


def run_identity(cfgs: RunConfigs) -> dict:
  """What must not change when a run resumes: model, optimizer, training and data settings (JSON).

  Evaluation and logging cadence are left out (they do not alter the trained function), and so is the
  checkpoint policy, which is not a training setting at all.
  """
  return info_identity({"model": dataclasses.asdict(cfgs.model), "optimizer": dataclasses.asdict(cfgs.optimizer),
                        "train": dataclasses.asdict(cfgs.train), "dataset": cfgs.dataset.name,
                        "tokenizer": cfgs.dataset.tokenizer.identity(), "seed": cfgs.train.seed,
                        "tokens_planned": cfgs.train.tokens})


def info_identity(info: dict) -> dict:
  """The resume identity of run.json's fields (or of the same fields built from configs, by `run_identity`)."""
  train = {k: v for k, v in info.get("train", {}).items() if k not in CADENCE_KNOBS}
  identity = {"model": info.get("model"), "optimizer": info.get("optimizer"), "train": train,
              "dataset": info.get("dataset"), "tokenizer": info.get("tokenizer"), "seed": info.get("seed"),
              "tokens_planned": info.get("tokens_planned")}
  return json.loads(json.dumps(identity, sort_keys=True, default=str))


def branch_difference(parent: dict, child: dict) -> str | None:
  """Why a run with identity `child` cannot branch from a checkpoint with identity `parent` (None: it can)."""
  pick = lambda ident: {**{k: ident.get(k) for k in BRANCH_KEYS},
                        "train": {k: ident.get("train", {}).get(k) for k in BRANCH_TRAIN_KNOBS}}
  return checkpoint.first_difference(pick(parent), pick(child))


def parse_branch(text: str | None) -> tuple[Path, int | None] | None:
  """`OLD_DIR[@STEP]` -> (OLD_DIR, STEP or None for the newest checkpoint)."""
  if not text:
    return None
  path, _, step = text.rpartition("@") if "@" in text else (text, "", "")
  if step and not step.isdigit():
    raise UserError(f"--branch_from={text!r}: the step after '@' must be a whole number")
  parent = storage.path(path)
  if not (parent / "checkpoints").is_dir():
    raise UserError(f"--branch_from: {parent} is not a run directory with checkpoints")
  return parent, int(step) if step else None


def process_age_s() -> float | None:
  """Seconds since this process started (Linux /proc), for the start-up cost a sweep pays per run."""
  try:
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def _first_nonfinite(window: list[dict]) -> tuple[int, str] | None:
  """(index in the window, metric) of the first step whose loss or gradient norm is not finite."""
  for i, w in enumerate(window):
    for key in ("train_loss", "grad_norm"):
      if not math.isfinite(float(w[key])):
        return i, key
  return None


@dataclasses.dataclass
class _Session:
  """Everything the step loop of one run uses, built once by `run`."""

  run_dir: Path
  train: TrainConfig
  ckpt: checkpoint.CheckpointConfig
  program: Any
  train_step: Any
  eval_step: Any
  eval_batches: list
  data: Any
  fresh_data: dict
  checkpoints: checkpoint.Checkpointer
  writer: MetricsWriter
  flops_per_token: float
  peak: Any
  is_writer: bool
  say: Callable[[str], None]
  preemption: PreemptionWatch
  status: runs.StatusKeeper
  display: TrainDisplay
  branch: tuple[Path, int | None] | None = None
  run_start: float = 0.0  # perf_counter when `run` was called (a sweep worker trains many runs in one process)
  step: int = 0
  started: bool = False
  initial_eval_s: float = 0.0

  def set_status(self, state: str, step: int, reason: str = "") -> None:
    self.status.set(state, step, reason)

  def restore(self) -> tuple[int, Any, checkpoint.Progress]:
    """The newest usable checkpoint, else the branch parent's, else the initial state and data position."""
    restored = self.checkpoints.restore_latest(self.data)
    if restored is None and self.branch is not None:
      restored = self.checkpoints.restore_branch(*self.branch, self.data)
    if restored is not None:
      return restored.step, restored.state, restored.progress
    self.data.set_state(self.fresh_data)
    return 0, init_state(self.program, self.train.seed), checkpoint.Progress()


def check_sequence_splits(cfgs: RunConfigs) -> None:
  """model.attention_blocks and an explicit model.loss_chunks must divide train.seq_len (checked before any work)."""
  for knob, value in (("attention_blocks", cfgs.model.attention_blocks), ("loss_chunks", cfgs.model.loss_chunks)):
    if value is not None and cfgs.train.seq_len % value:
      raise UserError(f"model.{knob}={value} does not divide train.seq_len={cfgs.train.seq_len}")


def check_existing(run_dir: Path, identity: dict, status: dict) -> None:
  """A run directory holding another configuration's run is refused (a done one too) before any work."""
  info = runs.read_run_info(run_dir)
  if info is None:
    return
  difference = checkpoint.first_difference(info_identity(info), identity)
  if difference is None:
    return
  if status["state"] == "done":
    raise UserError(f"{run_dir} is done, but its config differs from this one ({difference}); "
                    "use a new --run_dir, or the run's own config.gin")
  raise UserError(f"{run_dir} was started with a different configuration ({difference}); "
                  "use a new --run_dir or the original config")


def repetition_note(cfgs: RunConfigs) -> str | None:
  """A line saying that the run repeats data (D exceeds the unique tokens), or None when it does not."""
  t = cfgs.train
  epochs = cfgs.dataset.epochs(t.plan[1], t.seq_len, t.global_batch, t.unique_tokens)
  if epochs is None or epochs <= 1.0:
    return None
  if t.unique_tokens is None:
    what = f"the training split of {cfgs.dataset.name} ({cfgs.dataset.train_tokens:,} unique tokens)"
  else:
    unique = pipeline.plan_unique(t.unique_tokens, t.seq_len)[1]  # whole sequences are repeated
    rounded = f", rounded up to whole sequences of {t.seq_len}" if unique != t.unique_tokens else ""
    what = f"train.unique_tokens ({unique:,} unique tokens{rounded})"
  return f"repeating data: D = {t.plan[1]:,} tokens is {epochs:.2f} epochs of {what}"


def _eval_batch_size(t: TrainConfig) -> int:
  """Evaluation runs in microbatches of the training step's, so it never needs more memory than a step."""
  return t.global_batch // t.grad_accum


def run(run_dir: str | Path, mesh_text: str = "-1x1x1", stream_wrapper: Callable | None = None,
        branch_from: str | None = None) -> dict:
  """Trains one run into `run_dir` from the parsed gin config, resuming from its checkpoints; returns the last record.

  `branch_from` (`OLD_DIR[@STEP]`) starts a new run from another run's checkpoint: parameters, optimizer
  state and data position. `stream_wrapper`, if given, is applied to the training iterator (it must keep
  get_state/set_state), to filter or instrument batches.
  """
  started = time.perf_counter()
  run_dir = runs.check_run_dir(run_dir)
  cfgs = resolve_configs()
  ckpt_cfg = config.build(checkpoint.checkpoint_config)
  mesh_shape = sharding.parse_mesh(mesh_text, jax.device_count())
  check_fits_mesh(cfgs.train, mesh_shape)
  check_sequence_splits(cfgs)
  branch = parse_branch(branch_from)
  identity = run_identity(cfgs)
  status = runs.read_status(run_dir)
  check_existing(run_dir, identity, status)
  if status["state"] == "done":
    print(f"scaling train: {run_dir} is already done (step {status['step']}); nothing to do", file=sys.stderr)
    return status
  if branch is not None:
    _check_branch_parent(*branch, identity)
  t, pi, pc = cfgs.train, jax.process_index(), jax.process_count()
  eval_batches = cfgs.dataset.eval_batches(seq_len=t.seq_len, batch_size=_eval_batch_size(t), num_tokens=t.eval_tokens,
                                           process_index=pi, process_count=pc)
  is_writer = pi == 0
  say = _reporter(is_writer)
  cfgs.dataset.check_unique_tokens(t.unique_tokens, t.seq_len)  # before the run directory exists
  note = repetition_note(cfgs)
  if note:
    say(note)
  run_dir.mkdir(parents=True, exist_ok=True)
  keeper = runs.StatusKeeper(run_dir, enabled=is_writer)
  keeper.set("running", status.get("step", 0), "starting")
  cache.enable_compilation_cache()
  try:
    with PreemptionWatch() as preemption:  # from here on, SIGTERM means: save at the next step boundary
      return _build_and_train(run_dir, cfgs, ckpt_cfg, mesh_shape, preemption, stream_wrapper, identity,
                              eval_batches, keeper, say, branch, started)
  except BaseException as e:
    if keeper.state == "running":
      reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
      keeper.set("failed", keeper.step, reason.splitlines()[0] if reason else type(e).__name__)
    raise
  finally:
    keeper.stop()


def _check_branch_parent(parent: Path, step: int | None, identity: dict) -> None:
  """The parent run must have the same model, data and batch geometry as the branch (checked on run.json), and
  a checkpoint at `step`: both before the branch's run directory is made."""
  info = runs.read_run_info(parent)
  if info is None:
    raise UserError(f"--branch_from: {parent} has no run.json")
  steps = checkpoint.step_directories(parent)
  if step is not None and step not in steps:
    raise UserError(f"--branch_from: {parent} has no checkpoint at step {step}; it has {steps}")
  difference = branch_difference(info_identity(info), identity)
  if difference:
    raise UserError(f"--branch_from: {parent} trained another model or data order ({difference})")


def xla_flops_cached(cfgs: RunConfigs, lowered=None) -> float | None:
  """The `xla` FLOPs per token, lowered once per (model, optimizer, batch) and then read from the cache.

  `lowered`: the run's own lowered train step, counted directly when it is the program the count needs.
  """
  t = cfgs.train
  key = {"model": dataclasses.asdict(cfgs.model), "optimizer": dataclasses.asdict(cfgs.optimizer),
         "global_batch": t.global_batch, "seq_len": t.seq_len, "jax": jax.__version__,
         "backend": jax.default_backend()}
  return cache.cached_value("xla_flops", key, lambda: xla_flops_per_token(cfgs.model, cfgs.optimizer, t, lowered))


def _build_and_train(run_dir: Path, cfgs: RunConfigs, ckpt_cfg: checkpoint.CheckpointConfig, mesh_shape,
                     preemption: PreemptionWatch, stream_wrapper: Callable | None, identity: dict,
                     eval_host_batches: list, keeper: runs.StatusKeeper, say: Callable[[str], None],
                     branch: tuple[Path, int | None] | None, started: float) -> dict:
  """Compiles the run's program, restores its newest usable checkpoint (if any) and trains to the end."""
  is_writer = jax.process_index() == 0
  t = cfgs.train
  mesh = sharding.make_mesh(mesh_shape)
  program = build_program(cfgs.model, cfgs.optimizer, t, mesh)
  lowered = lower_train_step(program, t)
  train_step = compile_train_step(program, t, lowered)
  eval_step = compile_eval_step(program, _eval_batch_size(t), t.seq_len)
  peak, peak_source = hardware.peak_flops(jax.devices())
  counted = lowered if counts_xla_flops(program, t) else None
  info = run_info(run_dir, cfgs, mesh_shape, xla_flops_cached(cfgs, counted), peak, peak_source)
  if tree_param_counts(program.abstract_state.params)["total"] != info["params_total"]:
    raise AssertionError("closed-form parameter count disagrees with the parameter tree")

  pi, pc = jax.process_index(), jax.process_count()
  data = cfgs.dataset.train_iterator(
      seq_len=t.seq_len, global_batch=t.global_batch, seed=t.seed, process_index=pi, process_count=pc, unique_tokens=t.unique_tokens
  )
  if stream_wrapper is not None:
    data = stream_wrapper(data)
  checkpoints = checkpoint.Checkpointer(
      run_dir / "checkpoints", ckpt_cfg, program.abstract_state, program.state_shardings, mesh, identity, say,
      branch_check=branch_difference)
  session = _Session(
      run_dir=run_dir, train=t, ckpt=ckpt_cfg, program=program, train_step=train_step, eval_step=eval_step,
      eval_batches=_device_batches(eval_host_batches, mesh), data=data, fresh_data=data.get_state(),
      checkpoints=checkpoints, writer=MetricsWriter(run_dir, enabled=False),
      flops_per_token=info["flops_per_token"][flops.MFU_CONVENTION], peak=peak, is_writer=is_writer, say=say,
      preemption=preemption, status=keeper, display=TrainDisplay(t.steps, enabled=is_writer, every=t.log_every),
      branch=branch, run_start=started)
  try:
    step, state, progress = session.restore()
    session.step = step
    own = checkpoints.steps()
    if step and own:
      say(f"resuming {run_dir} from its checkpoint at step {step}")
    elif step:
      say(f"branching {run_dir} from {branch[0]} at step {step}")
      parent = storage.absolute(branch[0])
      info["parent"] = {"run_dir": str(parent), "run_id": parent.name, "step": step}
    elif runs.read_metrics(run_dir):
      say(f"{run_dir} has metrics but no checkpoint; starting again from step 0")
    if step > t.steps:
      raise UserError(f"--branch_from step {step} is past this run's last step {t.steps} (train.tokens = {t.tokens})")
    if is_writer:
      runs.write_config(run_dir, config.operative_config())
      _keep_parent(run_dir, info)
      runs.write_run_info(run_dir, info)
      if step and not own and not runs.read_metrics(run_dir):
        runs.write_metrics(run_dir, inherited_records(runs.read_metrics(branch[0]), step, t))
    # From scratch, nothing is kept (not even an old step-0 record); else everything up to the restored step.
    session.writer = MetricsWriter(run_dir, enabled=is_writer, start_step=step if step else -1)
    session.set_status("running", step)
    if step == 0:
      _initial_eval(session, state)
    return _train(session, step, state, progress)
  finally:
    session.display.close()
    session.writer.close()
    checkpoints.close()


def _on_cadence(step: int, t) -> tuple[bool, bool]:
  """(log, eval): whether the record cadence alone writes a record, and an evaluation, at `step`."""
  return step % t.log_every == 0, bool(t.eval_every) and step % t.eval_every == 0


def inherited_records(parent: list[dict], step: int, t) -> list[dict]:
  """The parent's records a branch at `step` starts with: those a straight-through run would have written.

  The parent's record at `step` exists only because it was the parent's last step unless the branch's
  cadence writes one there too (then without the evaluation when the cadence evaluates elsewhere).
  """
  logs, evals = _on_cadence(step, t)
  kept = [r for r in parent if r["step"] < step]
  at_step = next((r for r in parent if r["step"] == step), None)
  if at_step is not None and (logs or evals):
    kept.append(at_step if evals else {k: v for k, v in at_step.items() if not k.startswith("eval_")})
  return kept


def _keep_parent(run_dir: Path, info: dict) -> None:
  """A resumed branch keeps the parent recorded in its run.json at the first start."""
  if "parent" in info:
    return
  previous = runs.read_run_info(run_dir)
  if previous and previous.get("parent"):
    info["parent"] = previous["parent"]


def _initial_eval(s: _Session, state) -> None:
  """The step-0 record: the validation loss of the initial parameters (the start of every loss curve)."""
  start = time.perf_counter()
  record = {"step": 0, "tokens": 0}  # no lr: a record's lr is that of its last step, and none has run yet
  record.update(evaluate(s.eval_step, state.params, s.eval_batches))
  s.initial_eval_s = time.perf_counter() - start
  s.writer.write(record)
  s.display.show(record)


def _train(s: _Session, step: int, state, progress: checkpoint.Progress) -> dict:
  """The step loop from `step` to the end: records, evaluations, saves, preemption and the divergence guard."""
  t = s.train
  record = s.writer.kept[-1] if s.writer.kept else {}
  window, window_start = list(progress.window), time.perf_counter() - progress.window_elapsed_s
  while step < t.steps:
    for _ in range(progress.skipped.count(step + 1)):
      next(s.data)
    state, metrics = s.train_step(state, sharding.global_batch(next(s.data), s.program.mesh))
    window.append(metrics)
    if not s.started:
      _first_step_done(s, metrics)
    step = s.step = step + 1
    is_last = step == t.steps
    is_eval = is_last or _on_cadence(step, t)[1]
    is_record = is_last or any(_on_cadence(step, t))
    preempted = s.preemption.reached(step)
    saving = preempted or is_last or s.checkpoints.should_save(step)
    if not (is_record or saving):
      continue
    window = jax.device_get(window)
    nonfinite = _first_nonfinite(window)
    if nonfinite is not None:
      step, state, progress = _diverged(s, step, window, nonfinite, time.perf_counter() - window_start, progress)
      s.step = step
      record = s.writer.kept[-1] if s.writer.kept else {}
      window, window_start = list(progress.window), time.perf_counter() - progress.window_elapsed_s
      continue
    # A branch taken at this checkpoint must go on as the straight-through run would; that run writes no
    # record here unless the cadence says so, so the last step's own record leaves the saved window intact.
    kept_window, kept_elapsed = (window, time.perf_counter() - window_start) if not any(_on_cadence(step, t)) else ([], 0.0)
    if is_record:
      record = _train_record(step, t, window, time.perf_counter() - window_start, s.flops_per_token, s.peak)
      if is_eval:
        record.update(evaluate(s.eval_step, state.params, s.eval_batches))
      s.writer.write(record)
      s.display.show(record)
      s.status.update(step=step)
      window, window_start = [], time.perf_counter()
    if saving:
      s.writer.flush()  # on GCS: every record up to this checkpoint is readable before it commits
      s.checkpoints.save(step, state, s.data, dataclasses.replace(progress, window=kept_window, window_elapsed_s=kept_elapsed))
    if preempted and not is_last:
      s.checkpoints.wait()
      s.set_status("preempted", step, f"SIGTERM: checkpoint saved at step {step}")
      where = f" (process {jax.process_index()} of {jax.process_count()})" if jax.process_count() > 1 else ""
      print(f"scaling train: preempted at step {step}{where}: checkpoint saved; run the same command to resume",
            file=sys.stderr, flush=True)
      return {**record, "preempted": True}
  s.checkpoints.wait()
  reason = f"{progress.rollbacks} rollback(s); skipped the batch of step(s) {progress.skipped}" if progress.rollbacks else ""
  s.set_status("done", t.steps, reason)
  return record


def _first_step_done(s: _Session, metrics: dict) -> None:
  """Waits for the first step, then reports the start-up cost: process start to the first finished step."""
  jax.block_until_ready(metrics)
  s.started = True
  age = process_age_s()
  run_age = time.perf_counter() - s.run_start
  if age is not None:
    s.say(f"first step done {age:.1f} s after process start, {run_age:.1f} s after the run's start "
          f"({s.initial_eval_s:.1f} s of it the step-0 evaluation)")
  s.status.update(startup_s=round(age, 3) if age is not None else None, run_startup_s=round(run_age, 3),
                  initial_eval_s=round(s.initial_eval_s, 3))


def _diverged(s: _Session, step: int, window: list[dict], nonfinite: tuple[int, str], elapsed: float,
              progress: checkpoint.Progress):
  """The divergence guard: fails the run (UserError) or rolls it back, returning (step, state, progress) to go on from.

  A rollback restores the last checkpoint (or the initial state) and marks the offending step's batch to be
  skipped; after `checkpoint.max_rollbacks` of them the run fails instead.
  """
  index, metric = nonfinite
  offending = step - len(window) + 1 + index
  reason = f"non-finite {metric} at step {offending}"
  if s.ckpt.on_divergence != "rollback" or progress.rollbacks >= s.ckpt.max_rollbacks:
    s.writer.write(_train_record(step, s.train, window, elapsed, s.flops_per_token, s.peak))
    if s.ckpt.on_divergence == "rollback":
      reason += f" after {progress.rollbacks} rollback(s)"
    s.set_status("failed", offending, reason)
    raise UserError(f"{s.run_dir}: training diverged: {reason}")
  s.checkpoints.wait()
  step, state, restored = s.restore()
  progress = dataclasses.replace(restored, skipped=progress.skipped + [offending], rollbacks=progress.rollbacks + 1)
  s.writer.rewind(step)
  message = (f"{reason}: rolled back to step {step}, skipping the batch of step {offending} "
             f"(rollback {progress.rollbacks} of {s.ckpt.max_rollbacks})")
  s.say(message)
  s.set_status("running", step, message)
  return step, state, progress


def _train_record(step: int, t: TrainConfig, window: list[dict], elapsed: float, flops_per_token: float, peak) -> dict:
  """One metrics.jsonl record for the steps since the previous record (train_loss is their mean)."""
  n = len(window)
  tokens_per_s = n * t.tokens_per_step / elapsed
  flops_per_s = tokens_per_s * flops_per_token
  return {
      "step": step,
      "tokens": step * t.tokens_per_step,
      "train_loss": float(np.mean([w["train_loss"] for w in window])),
      "lr": float(window[-1]["lr"]),
      "grad_norm": float(window[-1]["grad_norm"]),
      "step_time_s": elapsed / n,
      "tokens_per_s": tokens_per_s,
      "flops_per_s": flops_per_s,
      "mfu": flops_per_s / peak if peak else None,
  }
