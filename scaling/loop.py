"""The training loop of one run: configs from gin, data, sharded state, steps, evaluation, run directory.

Everything that can fail on bad input (gin values, mesh, batch divisibility) is checked before any
device work, so a typo costs seconds and never touches an existing run's files.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from scaling import config, flops, hardware, runs, sharding
from scaling.errors import UserError
from scaling.metrics import MetricsWriter
from scaling.model import ModelConfig, param_counts, tree_param_counts
from scaling.optim import OptimizerConfig, optimizer_config
from scaling.sizes import model_config
from scaling.train import (
    TrainConfig,
    build_program,
    compile_eval_step,
    compile_train_step,
    evaluate,
    init_state,
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
  """run.json: identity, sizes and the FLOP conventions of this run (DESIGN.md)."""
  t, m = cfgs.train, cfgs.model
  counts = param_counts(m)
  per_token = flops.flops_per_token(m, t.seq_len)
  per_token["xla"] = xla_per_token
  tokenizer = cfgs.dataset.tokenizer
  return {
      "run_id": run_dir.name,
      "params_total": counts["total"],
      "params_embedding": counts["embedding"],
      "params_non_embedding": counts["non_embedding"],
      "params_convention": "embedding = input table + output layer (once if tied); non_embedding = the rest",
      "tokens_planned": t.tokens,
      "tokens_actual": t.steps * t.tokens_per_step,
      "tokens_rounding": t.steps * t.tokens_per_step - t.tokens,
      "steps": t.steps,
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
      "epochs": cfgs.dataset.epochs(t.steps * t.tokens_per_step, t.seq_len, t.global_batch, t.unique_tokens),
      "model": dataclasses.asdict(m),
      "train": dataclasses.asdict(t),
      "optimizer": dataclasses.asdict(cfgs.optimizer),
      "versions": _versions(),
  }


def _device_batches(batches: list[dict], mesh) -> list[dict]:
  return [sharding.global_batch(b, mesh) for b in batches]


def run(run_dir: str | Path, mesh_text: str = "-1x1x1") -> dict:
  """Trains one run into `run_dir` from the parsed gin config; returns the final record."""
  run_dir = Path(run_dir)
  cfgs = resolve_configs()
  mesh_shape = sharding.parse_mesh(mesh_text, jax.device_count())
  check_fits_mesh(cfgs.train, mesh_shape)
  status = runs.read_status(run_dir)
  if status["state"] == "done":
    print(f"scaling train: {run_dir} is already done (step {status['step']}); nothing to do", file=sys.stderr)
    return status
  is_writer = jax.process_index() == 0
  run_dir.mkdir(parents=True, exist_ok=True)
  if runs.read_metrics(run_dir):
    raise UserError(f"{run_dir} already holds metrics of an unfinished run; resuming needs checkpoints (not yet supported)")

  t = cfgs.train
  mesh = sharding.make_mesh(mesh_shape)
  program = build_program(cfgs.model, cfgs.optimizer, t, mesh)
  train_step = compile_train_step(program, t)
  eval_step = compile_eval_step(program, t.global_batch, t.seq_len)
  peak, peak_source = hardware.peak_flops(jax.devices())
  info = run_info(run_dir, cfgs, mesh_shape, xla_flops_per_token(cfgs.model, cfgs.optimizer, t), peak, peak_source)
  if tree_param_counts(program.abstract_state.params)["total"] != info["params_total"]:
    raise AssertionError("closed-form parameter count disagrees with the parameter tree")
  if is_writer:
    runs.write_text_atomic(run_dir / "config.gin", config.operative_config())
    runs.write_json_atomic(run_dir / "run.json", info)
    runs.set_status(run_dir, "running", 0)

  pi, pc = jax.process_index(), jax.process_count()
  data = cfgs.dataset.train_iterator(
      seq_len=t.seq_len, global_batch=t.global_batch, seed=t.seed, process_index=pi, process_count=pc, unique_tokens=t.unique_tokens
  )
  eval_batches = _device_batches(
      cfgs.dataset.eval_batches(seq_len=t.seq_len, batch_size=t.global_batch, num_tokens=t.eval_tokens, process_index=pi, process_count=pc),
      mesh,
  )
  state = init_state(program, t.seed)
  writer = MetricsWriter(run_dir, enabled=is_writer)
  flops_per_token = info["flops_per_token"][flops.MFU_CONVENTION]
  record: dict = {}
  try:
    window, window_start = [], time.perf_counter()
    for step in range(t.steps):
      state, metrics = train_step(state, sharding.global_batch(next(data), mesh))
      window.append(metrics)
      done_steps = step + 1
      is_last = done_steps == t.steps
      is_eval = is_last or (t.eval_every and done_steps % t.eval_every == 0)
      if not (is_last or is_eval or done_steps % t.log_every == 0):
        continue
      host = jax.device_get(window)
      elapsed = time.perf_counter() - window_start
      record = _train_record(done_steps, t, host, elapsed, flops_per_token, peak)
      if not math.isfinite(record["train_loss"]) or not math.isfinite(record["grad_norm"]):
        writer.write(record)
        reason = f"non-finite {'train_loss' if not math.isfinite(record['train_loss']) else 'grad_norm'} at step {done_steps}"
        if is_writer:
          runs.set_status(run_dir, "failed", done_steps, reason)
        raise UserError(f"{run_dir}: training diverged: {reason}")
      if is_eval:
        record.update(evaluate(eval_step, state.params, eval_batches))
      writer.write(record)
      window, window_start = [], time.perf_counter()
    if is_writer:
      runs.set_status(run_dir, "done", t.steps)
  except BaseException as e:
    if is_writer and runs.read_status(run_dir)["state"] == "running":
      runs.set_status(run_dir, "failed", int(record.get("step", 0)), f"{type(e).__name__}: {e}")
    raise
  finally:
    writer.close()
  return record


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
