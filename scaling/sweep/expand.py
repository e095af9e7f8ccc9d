"""Sweep expansion: a parsed sweep spec -> one locked run spec (ml_collections ConfigDict) per run.

Each run spec holds the run's sizes and budgets (N, D, C under the sweep's convention, steps, batch, LR)
and the gin bindings that turn the sweep's base experiment into that run. Its `run_id` is a short hash
of everything that decides the trained function (the base experiment's training bindings and the run's
own), so expanding the same spec again finds the same runs, and editing the sweep adds runs without
disturbing finished ones. Bad specs raise UserError before anything is written.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import gin
import ml_collections

from scaling import config, flops, sizes
from scaling.errors import UserError
from scaling.fit.load import CONVENTIONS
from scaling.model import ModelConfig, param_counts
from scaling.optim import OptimizerConfig, optimizer_config
from scaling.sizes import SHAPE_KNOBS, model_config
from scaling.sweep import spec as spec_lib
from scaling.train import TrainConfig, train_config

# Configurables a sweep owns: their bindings describe the sweep or where it runs, not a run's training.
SWEEP_CONFIGURABLES = ("sweep", "grid", "isoflop", "data_constrained", "cooldowns", "size_rules", "sweep_point",
                       "slurm", "tpu", "demo")
# Knobs that do not change the trained function (cadence, checkpoint policy): left out of the run id.
IDENTITY_EXEMPT = {"train": ("eval_every", "eval_tokens", "log_every"), "checkpoint": None}
COUNT_KEY = {"params_total": "total", "params_non_embedding": "non_embedding"}


@dataclasses.dataclass(frozen=True)
class Base:
  """The experiment every run of the sweep starts from: its vocabulary, training and optimiser settings."""

  vocab_size: int
  train: TrainConfig
  optimizer: OptimizerConfig
  bindings: dict[str, Any]  # "configurable.param" -> value, for the run id


def register_configurables() -> None:
  """Imports every module that defines gin configurables, so any shared config parses."""
  from scaling import loop  # noqa: F401  (model, train, optimizer, checkpoint, sweep_point)
  from scaling.data import dataset  # noqa: F401  (data)
  from scaling.demo import recipe  # noqa: F401  (demo)


def load(spec_files: Sequence[str], bindings: Sequence[str] = ()) -> tuple[spec_lib.SweepSpec, Base]:
  """Parses a sweep's gin files and bindings into its spec and base experiment (UserError on bad input)."""
  from scaling.data.dataset import DataConfig, make_tokenizer

  register_configurables()
  config.parse(spec_files, bindings)
  sweep = config.build(spec_lib.sweep_spec)
  data = config.build(DataConfig)
  vocab = make_tokenizer(data.tokenizer, data.tokenizer_model, data.vocab_size).vocab_size
  train = config.build(train_config, tokens=1)
  optimizer = config.build(optimizer_config)
  for knob in SHAPE_KNOBS:
    try:
      value = gin.query_parameter(f"model.{knob}")
    except ValueError:
      continue
    if value is not None:
      raise UserError(f"the sweep's base config binds model.{knob} = {value!r}: a sweep sets each run's shape "
                      f"from its parts' sizes, so remove it (model.size is overridden; model.head_dim and model.mlp_ratio stay)")
  return sweep, Base(vocab, train, optimizer, _training_bindings())


def _training_bindings() -> dict[str, Any]:
  """Every bound gin parameter that can change what a run trains, as {"configurable.param": value}."""
  out = {}
  for (scope, selector), params in gin.config._CONFIG.items():
    name = selector.rsplit(".", 1)[-1]
    if name in SWEEP_CONFIGURABLES:
      continue
    exempt = IDENTITY_EXEMPT.get(name, ())
    for param, value in params.items():
      if exempt is None or param in exempt:
        continue
      out[f"{scope + '/' if scope else ''}{name}.{param}"] = value
  return out


# --- sizes ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Size:
  """One model size of the sweep: how it is asked for (a name, or a target N) and what it is."""

  name: str | None
  params: float | None
  model: ModelConfig
  N: float  # parameters under the sweep's convention
  flops_per_token: float  # training FLOPs per token under the sweep's convention

  @property
  def label(self) -> str:
    return self.name or f"{self.model.width}x{self.model.depth}"


def _size(base: Base, convention: str, name: str | None = None, params: float | None = None) -> Size:
  try:
    model = model_config(vocab_size=base.vocab_size, size=name, params=params)
  except ValueError as e:
    raise UserError(f"sweep size {name or f'params={params:g}'}: {str(e).splitlines()[0]}") from None
  n_key, f_key = CONVENTIONS[convention]
  n = param_counts(model)[COUNT_KEY[n_key]]
  return Size(name, None if params is None else float(params), model, float(n),
              flops.flops_per_token(model, base.train.seq_len)[f_key])


def _part_sizes(base: Base, convention: str, part) -> list[Size]:
  if part.sizes is not None:
    return [_size(base, convention, name=n) for n in part.sizes]
  return [_size(base, convention, params=p) for p in part.params]


def _bound(knob: str, default: Any) -> Any:
  try:
    value = gin.query_parameter(knob)
  except ValueError:
    return default
  return default if value is None else value


@functools.lru_cache(maxsize=8)
def _candidates(head_dim: int, mlp_ratio: float, mlp: str, min_aspect: float, max_aspect: float, min_depth: int,
                max_depth: int) -> list[tuple[int, int, int]]:
  """(width, depth, non-embedding N) of every shape the size rule can give."""
  return [(w, d, n) for w, d, _, _, n in sizes.canonical_shapes(head_dim=head_dim, mlp_ratio=mlp_ratio, mlp=mlp,
                                                                min_aspect=min_aspect, max_aspect=max_aspect,
                                                                min_depth=min_depth, max_depth=max_depth)]


def size_near(base: Base, convention: str, n_target: float) -> Size:
  """The shape of the size rule whose N (under the convention) is nearest `n_target`.

  It is asked for as `model.params` = its exact non-embedding count, which the rule maps back to it.
  """
  embedding = base.vocab_size * (1 if _bound("model.tie_embeddings", False) else 2)
  counted = (lambda w, n: n) if CONVENTIONS[convention][0] == "params_non_embedding" else (lambda w, n: n + embedding * w)
  depths = _bound("model.min_depth", 1), _bound("model.max_depth", 128)
  try:
    sizes.check_depths(*depths)
  except ValueError as e:
    raise UserError(str(e)) from None
  rule = (_bound("model.head_dim", 64), _bound("model.mlp_ratio", 4.0), _bound("model.mlp", "swiglu"),
          _bound("model.min_aspect", 32.0), _bound("model.max_aspect", 128.0), *depths)
  shapes = _candidates(*rule)
  if not shapes:
    raise UserError(f"the size rule has no shape with model.head_dim = {rule[0]}, width/depth in [{rule[3]}, "
                    f"{rule[4]}] and depth in [{depths[0]}, {depths[1]}]")
  width, depth, n = min(shapes, key=lambda s: abs(math.log(counted(s[0], s[2]) / n_target)))
  size = _size(base, convention, params=float(n))
  if (size.model.width, size.model.depth) != (width, depth):
    raise AssertionError(f"model.params={n} does not map back to the shape {width}x{depth}")
  return size


def _centre(base: Base, convention: str, budget: float, tokens_per_param: float) -> Size:
  """The size whose D/N at this budget is `tokens_per_param`: solves C = flops_per_token(N) x r x N."""
  k = 6.0
  for _ in range(5):
    size = size_near(base, convention, math.sqrt(budget / (k * tokens_per_param)))
    k = size.flops_per_token / size.N
  return size


def _prior_centre(fit_path: str, convention: str, budget: float) -> float:
  from scaling.fit import predict

  fit_ = predict.read(fit_path)
  named = fit_.get("convention", {}).get("name")
  if named is not None and named != convention:
    raise UserError(f"isoflop.prior_fit {fit_path} counts N and C as {named!r}, the sweep as {convention!r}")
  return float(predict.optimum_at(fit_, budget)["N"]["value"])


def isoflop_sizes(base: Base, convention: str, part: spec_lib.IsoFLOP, budget: float) -> list[Size]:
  """`part.sizes` distinct sizes spread evenly in log N over `part.spread` around the budget's centre."""
  if part.centre:
    centre = part.centre
  elif part.prior_fit:
    centre = _prior_centre(part.prior_fit, convention, budget)
  else:
    centre = _centre(base, convention, budget, part.tokens_per_param).N
  k = part.sizes
  targets = [centre * part.spread ** ((i / (k - 1) - 0.5) if k > 1 else 0.0) for i in range(k)]
  sizes = [size_near(base, convention, t) for t in targets]
  shapes = {(s.model.width, s.model.depth) for s in sizes}
  if len(shapes) < k:
    raise UserError(f"isoflop budget {budget:.3g}: the size rule gives only {len(shapes)} distinct shapes for "
                    f"{k} sizes between N = {targets[0]:.3g} and {targets[-1]:.3g}; widen isoflop.spread "
                    "or set a smaller model.head_dim")
  return sizes


# --- hyper-parameters ----------------------------------------------------------------------------------


def _power(rule: tuple[float, float, str], N: float, C: float) -> float:
  coefficient, exponent, variable = rule
  return coefficient * (N if variable == "N" else C) ** exponent


@dataclasses.dataclass(frozen=True)
class Hyper:
  global_batch: int
  learning_rate: float
  steps: int
  tokens_actual: int
  batch_lowered: bool


def hyperparameters(sweep: spec_lib.SweepSpec, base: Base, size: Size, tokens: int, compute: float,
                    where: str) -> Hyper:
  """Batch and learning rate from the size rules (or the base), then the step floor, which may lower the batch."""
  rules, seq_len = sweep.rules, base.train.seq_len
  lr = _power(rules.learning_rate, size.N, compute) if rules.learning_rate else base.train.learning_rate
  if rules.batch_tokens:
    batch = _power(rules.batch_tokens, size.N, compute) / seq_len
    batch = max(rules.min_batch, rules.batch_multiple * max(1, round(batch / rules.batch_multiple)))
    if rules.max_batch is not None:
      batch = min(batch, rules.max_batch)
  else:
    batch = base.train.global_batch
  lowered = False
  if math.ceil(tokens / (batch * seq_len)) < sweep.min_steps:
    fit = tokens / (sweep.min_steps * seq_len)
    batch, lowered = (fit // rules.batch_multiple) * rules.batch_multiple, True
    if batch < rules.min_batch:
      raise UserError(
          f"{where}: D = {tokens:,} tokens is under sweep.min_steps = {sweep.min_steps} steps even at the smallest "
          f"batch (size_rules.min_batch = {rules.min_batch} x train.seq_len = {seq_len}); raise the budget, "
          "or lower sweep.min_steps or size_rules.min_batch")
    batch = int(batch)
  if batch % base.train.grad_accum:
    raise UserError(f"{where}: global batch {batch} is not divisible by train.grad_accum = {base.train.grad_accum}; "
                    "make size_rules.batch_multiple a multiple of it")
  steps = math.ceil(tokens / (batch * seq_len))
  return Hyper(int(batch), float(lr), steps, steps * batch * seq_len, lowered)


# --- run specs -----------------------------------------------------------------------------------------


def _gin_value(value: Any) -> str:
  if isinstance(value, str):
    return repr(value)
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(_gin_value(v) for v in value) + "]"
  return repr(value)


def run_id(base: Base, bindings: dict[str, Any], extra: Sequence[str] = ()) -> str:
  """A short hash of what decides the trained function: the base's training bindings overridden by the run's
  (and its part's own `bindings`, applied last)."""
  identity = {**base.bindings, **{k: v for k, v in bindings.items() if k.split(".")[0] not in ("sweep_point", "checkpoint")}}
  text = json.dumps([identity, list(extra)], sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def _spec(sweep: spec_lib.SweepSpec, base: Base, *, part, role: str | None, size: Size, seed: int, tokens: int,
          hyper: Hyper, budget: float | None = None, unique_tokens: float | None = None,
          optimizer: dict[str, Any] | None = None, parent: str | None = None, branch_step: int = 0,
          checkpoint_at: Sequence[int] = ()) -> ml_collections.ConfigDict:
  lr = spec_lib.bound_learning_rate(part.bindings)
  if lr is not None:  # an LR ablation: the part's value is what the run trains with
    hyper = dataclasses.replace(hyper, learning_rate=lr)
  model_knob = {"model.size": size.name, "model.params": None} if size.name else {"model.size": None, "model.params": size.params}
  bindings: dict[str, Any] = {
      **model_knob, "train.tokens": int(tokens), "train.seed": seed, "train.global_batch": hyper.global_batch,
      "train.learning_rate": hyper.learning_rate,
  }
  if unique_tokens is not None:
    bindings["train.unique_tokens"] = int(unique_tokens)
  for key, value in (optimizer or {}).items():
    bindings[f"optimizer.{key}"] = value
  if checkpoint_at:
    bindings["checkpoint.at_steps"] = list(checkpoint_at)
  bindings.update({"sweep_point.sweep": sweep.name, "sweep_point.part": part.kind, "sweep_point.budget": budget,
                   "sweep_point.convention": sweep.convention, "sweep_point.role": role, "sweep_point.scope": part.scope})
  m = size.model
  compute = size.flops_per_token * hyper.tokens_actual
  out = ml_collections.ConfigDict({
      "run_id": run_id(base, bindings, part.bindings), "sweep": sweep.name, "part": part.kind, "scope": part.scope, "role": role or "", "seed": seed,
      "size": size.label, "shape": {"width": m.width, "depth": m.depth, "heads": m.heads, "kv_heads": m.kv_heads,
                                    "head_dim": m.head_dim, "mlp_width": m.mlp_width},
      "convention": sweep.convention, "N": size.N, "params_total": param_counts(m)["total"],
      "params_non_embedding": param_counts(m)["non_embedding"], "flops_per_token": size.flops_per_token,
      "tokens": int(tokens), "tokens_actual": hyper.tokens_actual, "steps": hyper.steps,
      "tokens_per_param": hyper.tokens_actual / size.N, "C": compute, "budget": budget if budget is not None else 0.0,
      "global_batch": hyper.global_batch, "seq_len": base.train.seq_len, "learning_rate": hyper.learning_rate,
      "batch_lowered_for_step_floor": hyper.batch_lowered,
      "unique_tokens": int(unique_tokens) if unique_tokens is not None else 0,
      "epochs": hyper.tokens_actual / unique_tokens if unique_tokens else 0.0,
      "parent": parent or "", "branch_step": int(branch_step), "mesh": sweep.mesh,
      "bindings": [f"{k} = {_gin_value(v)}" for k, v in bindings.items()] + list(part.bindings),
  })
  out.lock()
  return out


def _budget_tokens(part, size: Size) -> list[float]:
  if part.tokens is not None:
    return list(part.tokens)
  return [r * size.N for r in part.tokens_per_param]


def _grid(sweep, base, part: spec_lib.Grid) -> list:
  out = []
  for size in _part_sizes(base, sweep.convention, part):
    for seed in sweep.seeds:
      for u in part.unique_tokens or (None,):
        budgets = [e * u for e in part.epochs] if part.epochs is not None else _budget_tokens(part, size)
        for d in budgets:
          tokens = int(round(d))
          where = f"{part.kind} size {size.label}, D = {tokens:,}"
          hyper = hyperparameters(sweep, base, size, tokens, size.flops_per_token * tokens, where)
          out.append(_spec(sweep, base, part=part, role=None, size=size, seed=seed, tokens=tokens, hyper=hyper,
                           unique_tokens=u))
  return out


def _isoflop(sweep, base, part: spec_lib.IsoFLOP) -> list:
  out = []
  for budget in part.budgets:
    for size in isoflop_sizes(base, sweep.convention, part, budget):
      tokens = int(round(budget / size.flops_per_token))
      where = f"isoflop budget {budget:.3g}, size {size.label} (N = {size.N:.3g})"
      hyper = hyperparameters(sweep, base, size, tokens, budget, where)
      for seed in sweep.seeds:
        out.append(_spec(sweep, base, part=part, role=None, size=size, seed=seed, tokens=tokens, hyper=hyper,
                         budget=budget))
  return out


def branch_step(steps: int, warmup: int, cooldown_fraction: float) -> int:
  """The step a WSD run's cooldown branches from a constant-LR run: every step before it has the same LR.

  Mirrors `scaling.optim.learning_rate_schedule`: the cooldown starts after step `decay_start`, which
  itself is still at the peak, so the states after `decay_start + 1` steps agree.
  """
  last = steps - 1
  decay_start = max(last - max(int(round(cooldown_fraction * steps)), 1), max(warmup - 1, 0))
  return min(decay_start + 1, steps)


def _cooldowns(sweep, base, part: spec_lib.Cooldowns) -> list:
  out = []
  for size in _part_sizes(base, sweep.convention, part):
    budgets = sorted(int(round(d)) for d in _budget_tokens(part, size))
    where = f"cooldowns size {size.label}, D = {budgets[0]:,}"
    hyper = hyperparameters(sweep, base, size, budgets[0], size.flops_per_token * budgets[-1], where)
    batch_tokens = hyper.global_batch * base.train.seq_len
    warmup = part.warmup_steps
    if warmup is None:
      warmup = base.optimizer.warmup_for(math.ceil(budgets[0] / batch_tokens))
    for seed in sweep.seeds:
      branches = []
      for d in budgets:
        steps = math.ceil(d / batch_tokens)
        branches.append((d, steps, branch_step(steps, warmup, part.cooldown_fraction)))
      at = sorted({s for _, _, s in branches})
      parent_steps = at[-1]
      parent_hyper = dataclasses.replace(hyper, steps=parent_steps, tokens_actual=parent_steps * batch_tokens)
      parent = _spec(sweep, base, part=part, role="cooldown_parent", size=size, seed=seed,
                     tokens=parent_steps * batch_tokens, hyper=parent_hyper, checkpoint_at=at,
                     optimizer={"schedule": "constant", "warmup_steps": warmup})
      out.append(parent)
      for d, steps, start in branches:
        branch_hyper = dataclasses.replace(hyper, steps=steps, tokens_actual=steps * batch_tokens)
        out.append(_spec(sweep, base, part=part, role="cooldown", size=size, seed=seed, tokens=d,
                         hyper=branch_hyper, parent=parent.run_id, branch_step=start,
                         optimizer={"schedule": "wsd", "warmup_steps": warmup,
                                    "cooldown_fraction": part.cooldown_fraction}))
  return out


EXPANDERS = {"grid": _grid, "data_constrained": _grid, "isoflop": _isoflop, "cooldowns": _cooldowns}


def expand(sweep: spec_lib.SweepSpec, base: Base) -> list[ml_collections.ConfigDict]:
  """Every run of the sweep, in the order of its parts; runs that two parts share appear once."""
  out, seen = [], set()
  for part in sweep.parts:
    for run in EXPANDERS[part.kind](sweep, base, part):
      if run.run_id not in seen:
        seen.add(run.run_id)
        out.append(run)
  return out
