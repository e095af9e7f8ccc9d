"""Training: sharded state creation, the pure train step, evaluation and the loop that writes a run directory.

The token budget `train.tokens` fixes the number of steps; the jitted step is a pure function of
(state, batch) with explicit in/out shardings and a donated state.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from scaling import flops, sharding
from scaling.data.pipeline import plan_steps
from scaling.model import ModelConfig, Transformer, lr_multiplier
from scaling.optim import OptimizerConfig, leaf_name, make_optimizer, schedule_args, schedule_from_args

BATCH_KEYS = {
    "inputs": np.int32,
    "targets": np.int32,
    "weights": np.float32,
    "segment_ids": np.int32,
    "positions": np.int32,
    "bytes": np.float32,
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The canonical run knobs (DESIGN.md): budget, seed, batch, sequence length, learning rate."""

  tokens: int
  seed: int = 0
  global_batch: int = 32
  seq_len: int = 256
  learning_rate: float = 3e-3
  grad_accum: int = 1
  eval_every: int = 100
  eval_tokens: int = 262_144
  log_every: int = 10
  unique_tokens: int | None = None

  def __post_init__(self):
    for name in ("tokens", "global_batch", "seq_len", "grad_accum", "eval_tokens", "log_every"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0 or value != int(value):
        raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
      object.__setattr__(self, name, int(value))
    if not isinstance(self.seed, int) or isinstance(self.seed, bool):
      raise ValueError(f"train.seed must be an integer, got {self.seed!r}")
    if not isinstance(self.eval_every, int) or self.eval_every < 0:
      raise ValueError(f"train.eval_every must be an integer >= 0 (0: only at the end), got {self.eval_every!r}")
    if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
      raise ValueError(f"train.learning_rate must be a positive number, got {self.learning_rate!r}")
    if self.unique_tokens is not None:
      if isinstance(self.unique_tokens, bool) or not isinstance(self.unique_tokens, (int, float)) or not self.unique_tokens > 0:
        raise ValueError(f"train.unique_tokens must be a positive integer or None, got {self.unique_tokens!r}")
      object.__setattr__(self, "unique_tokens", int(self.unique_tokens))
    if self.global_batch % self.grad_accum:
      raise ValueError(f"train.global_batch={self.global_batch} must be divisible by train.grad_accum={self.grad_accum}")

  @property
  def tokens_per_step(self) -> int:
    return self.global_batch * self.seq_len

  @functools.cached_property
  def plan(self) -> tuple[int, int, int]:
    """(steps, tokens_actual, rounding) for the budget: the fewest whole batches that reach it (`plan_steps`)."""
    return plan_steps(self.tokens, self.global_batch, self.seq_len)

  @property
  def steps(self) -> int:
    return self.plan[0]


@gin.configurable("train")
def train_config(
    tokens: int = gin.REQUIRED,
    seed: int = 0,
    global_batch: int = 32,
    seq_len: int = 256,
    learning_rate: float = 3e-3,
    grad_accum: int = 1,
    eval_every: int = 100,
    eval_tokens: int = 262_144,
    log_every: int = 10,
    unique_tokens: int | None = None,
) -> TrainConfig:
  """The gin knobs `train.*`; `train.tokens` (the token budget D) is required.

  `train.unique_tokens` (U) below the budget repeats the first U tokens for D/U epochs
  (data-constrained scaling); None draws fresh data until the corpus itself runs out.
  """
  return TrainConfig(
      tokens, seed, global_batch, seq_len, learning_rate, grad_accum, eval_every, eval_tokens, log_every, unique_tokens
  )


@flax.struct.dataclass
class TrainState:
  """Everything the step updates: step counter, parameters (an nnx.State) and optimizer state."""

  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass
class Program:
  """The model, optimizer and shardings of one run, built once; everything the loop needs to step."""

  model_cfg: ModelConfig
  mesh: Mesh
  graphdef: Any
  optimizer: optax.GradientTransformation
  state_shardings: TrainState
  abstract_state: TrainState
  # The train step rebuilds the optimizer around a schedule of its `schedule_args` argument (the same
  # state tree as `optimizer`), so the schedule's numbers are not constants of the compiled program.
  optimizer_for: Callable[[optax.Schedule], optax.GradientTransformation]
  schedule_kind: str
  schedule_args: dict


def _replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def _lr_multipliers(model_cfg: ModelConfig, params) -> tuple:
  """(multiplier by parameter name, the names) for `make_optimizer` under mup; () under standard."""
  if model_cfg.parameterization != "mup":
    return ()
  names = sorted({leaf_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)})
  return functools.partial(lr_multiplier, model_cfg), names


def build_program(model_cfg: ModelConfig, opt_cfg: OptimizerConfig, train_cfg: TrainConfig, mesh: Mesh) -> Program:
  """Abstract model and optimizer state with their shardings; nothing is materialised."""
  abstract_model = nnx.eval_shape(lambda: Transformer(model_cfg, nnx.Rngs(0)))
  graphdef, abstract_params = nnx.split(abstract_model)
  param_shardings = sharding.state_shardings(abstract_params, mesh)
  args = schedule_args(opt_cfg, train_cfg.learning_rate, train_cfg.steps)
  multipliers = _lr_multipliers(model_cfg, abstract_params)

  def optimizer_for(schedule: optax.Schedule) -> optax.GradientTransformation:
    return make_optimizer(opt_cfg, schedule, *multipliers)

  optimizer = optimizer_for(schedule_from_args(opt_cfg.schedule, args))
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  opt_shardings = optax.tree_map_params(
      optimizer,
      lambda _, s: s,
      abstract_opt,
      param_shardings,
      transform_non_params=lambda _: _replicated(mesh),
      is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
  state_shardings = TrainState(step=_replicated(mesh), params=param_shardings, opt_state=opt_shardings)
  abstract_state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, opt_state=abstract_opt)
  return Program(model_cfg, mesh, graphdef, optimizer, state_shardings, abstract_state, optimizer_for, opt_cfg.schedule,
                 args)


def run_once_options() -> dict:
  """XLA options for a program that runs once per run (the initialisation).

  On CPU, LLVM's optimisation of the random-number kernels is most of a cold start's compile time: level 1
  compiles the initialisation ~2.5x faster than the default (3), runs it in milliseconds all the same, and
  gives bit-identical values (level 0 would change the last bit of some). Other backends keep their defaults.
  """
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else {}


def initial_state_fn(program: Program, seed: int) -> Callable[[], TrainState]:
  """The function (of nothing) that builds the initial parameters and optimizer state; jit it to run it."""

  def init():
    params = nnx.split(Transformer(program.model_cfg, nnx.Rngs(seed)))[1]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=program.optimizer.init(params))

  return init


def init_state(program: Program, seed: int) -> TrainState:
  """Creates parameters and optimizer state directly in their shardings (never whole on one device)."""
  with jax.set_mesh(program.mesh):
    lowered = jax.jit(initial_state_fn(program, seed), out_shardings=program.state_shardings).lower()
    return lowered.compile(compiler_options=run_once_options())()


def loss_fn(params, graphdef, model_cfg: ModelConfig, batch: dict, weight_total):
  """Mean next-token loss (plus z-loss) of a (micro)batch, normalised by the whole batch's weight."""
  model = nnx.merge(graphdef, params)
  nll, z, _ = model.loss_sums(
      batch["inputs"], batch["targets"], batch["weights"], batch["positions"], batch["segment_ids"], model_cfg.z_loss
  )
  return (nll + z) / weight_total, nll


def make_train_step(program: Program, grad_accum: int):
  """The pure train step (state, batch, schedule_args) -> (state, metrics), accumulating gradients over
  microbatches; `schedule_args` are the numbers of the LR schedule (`Program.schedule_args`)."""
  graphdef, model_cfg = program.graphdef, program.model_cfg
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: dict, schedule_args: dict) -> tuple[TrainState, dict]:
    schedule = schedule_from_args(program.schedule_kind, schedule_args)
    optimizer = program.optimizer_for(schedule)
    weight_total = jnp.maximum(jnp.sum(batch["weights"]), 1.0)
    if grad_accum == 1:
      (_, nll), grads = grad_fn(state.params, graphdef, model_cfg, batch, weight_total)
    else:
      # Microbatch i takes rows i, i + A, i + 2A, ...: each microbatch is spread over every device.
      micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]).swapaxes(0, 1), batch)

      def accumulate(carry, mb):
        (_, nll), g = grad_fn(state.params, graphdef, model_cfg, mb, weight_total)
        return jax.tree.map(jnp.add, carry, (nll, g)), None

      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
      (nll, grads), _ = jax.lax.scan(accumulate, zeros, micro)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"train_loss": nll / weight_total, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_eval_step(program: Program):
  """(params, batch) -> summed loss, token weight and bytes of one validation batch."""
  graphdef = program.graphdef

  def eval_step(params, batch):
    model = nnx.merge(graphdef, params)
    nll, _, weight = model.loss_sums(batch["inputs"], batch["targets"], batch["weights"], batch["positions"], batch["segment_ids"])
    return {"nll": nll, "weight": weight, "bytes": jnp.sum(batch["bytes"] * batch["weights"])}

  return eval_step


def batch_shardings(mesh: Mesh) -> dict[str, NamedSharding]:
  return {k: sharding.batch_sharding(mesh) for k in BATCH_KEYS}


def abstract_batch(batch_size: int, seq_len: int, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  return {
      k: jax.ShapeDtypeStruct((batch_size, seq_len), dt, sharding=sharding.batch_sharding(mesh))
      for k, dt in BATCH_KEYS.items()
  }


def _jit_train_step(program: Program, grad_accum: int):
  return jax.jit(
      make_train_step(program, grad_accum),
      in_shardings=(program.state_shardings, batch_shardings(program.mesh), _replicated(program.mesh)),
      out_shardings=(program.state_shardings, _replicated(program.mesh)),
      donate_argnums=0,
  )


def lower_train_step(program: Program, train_cfg: TrainConfig):
  """The train step for this program's mesh, lowered (not yet compiled); it donates the state."""
  step = _jit_train_step(program, train_cfg.grad_accum)
  batch = abstract_batch(train_cfg.global_batch, train_cfg.seq_len, program.mesh)
  with jax.set_mesh(program.mesh):
    return step.lower(program.abstract_state, batch, _abstract_args(program.schedule_args))


def _abstract_args(args: dict) -> dict:
  return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in args.items()}


def compile_train_step(program: Program, train_cfg: TrainConfig, lowered=None) -> Callable:
  """The ahead-of-time compiled train step for this program's mesh, as (state, batch) -> (state, metrics)
  with this run's schedule bound (it donates the state). Runs that differ only in their schedule's numbers
  (token budget, peak LR) compile the same program, so a sweep's neighbours hit the compilation cache."""
  if lowered is None:
    lowered = lower_train_step(program, train_cfg)
  with jax.set_mesh(program.mesh):
    compiled = lowered.compile()
  replicated = _replicated(program.mesh)
  args = {k: jax.make_array_from_callback(np.shape(v), replicated, lambda i, v=np.asarray(v): v[i])
          for k, v in program.schedule_args.items()}

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    return compiled(state, batch, args)

  return step


def counts_xla_flops(program: Program, train_cfg: TrainConfig) -> bool:
  """Whether this program's own train step is the one `xla_flops_per_token` lowers (so its count can be read
  from it instead of lowering another): layers unrolled, one device, no gradient accumulation."""
  return program.model_cfg.unroll_layers and program.mesh.size == 1 and train_cfg.grad_accum == 1


def xla_flops_per_token(model_cfg: ModelConfig, opt_cfg: OptimizerConfig, train_cfg: TrainConfig,
                        lowered=None) -> float | None:
  """Training FLOPs per token by XLA's own count of the train step (layers unrolled, one device).

  `lowered`: the run's own lowered train step, when `counts_xla_flops` says it is that program.
  """
  if lowered is not None:
    total = flops.xla_flops(lowered)
    return None if total is None else total / train_cfg.tokens_per_step
  cfg = dataclasses.replace(model_cfg, unroll_layers=True)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  program = build_program(cfg, opt_cfg, train_cfg, mesh)
  batch = abstract_batch(train_cfg.global_batch, train_cfg.seq_len, mesh)
  with jax.set_mesh(mesh):
    lowered = _jit_train_step(program, 1).lower(program.abstract_state, batch, _abstract_args(program.schedule_args))
  total = flops.xla_flops(lowered)
  return None if total is None else total / train_cfg.tokens_per_step


def compile_eval_step(program: Program, batch_size: int, seq_len: int):
  step = jax.jit(
      make_eval_step(program),
      in_shardings=(program.state_shardings.params, batch_shardings(program.mesh)),
      out_shardings=_replicated(program.mesh),
  )
  with jax.set_mesh(program.mesh):
    return step.lower(program.abstract_state.params, abstract_batch(batch_size, seq_len, program.mesh)).compile()


def evaluate(eval_step, params, batches: list[dict]) -> dict[str, float]:
  """Loss over the whole fixed validation set: nats per token and bits per byte."""
  totals = [eval_step(params, b) for b in batches]
  nll = sum(float(t["nll"]) for t in totals)
  weight = sum(float(t["weight"]) for t in totals)
  nbytes = sum(float(t["bytes"]) for t in totals)
  out = {"eval_loss": nll / max(weight, 1.0)}
  if nbytes > 0:
    out["eval_bits_per_byte"] = nll / nbytes / math.log(2)
  return out
