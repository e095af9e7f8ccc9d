"""AdamW with a learning-rate schedule, global-norm clipping, a weight-decay mask and per-parameter LR multipliers.

Schedules: `cosine` (linear warmup, cosine decay to `final_lr_fraction`), `wsd` (warmup, constant,
then a linear cooldown over the last `cooldown_fraction` of steps to `final_lr_fraction`), `multistep`
(warmup, then drops at the `milestones` fractions of the steps, in equal ratios down to
`final_lr_fraction`: DeepSeek's and Tissue et al.'s 8-1-1 by default) and `constant` (warmup, then
constant). Warmup takes step s (0-based) to peak * (s + 1) / warmup, so no step has a zero learning
rate; the decaying schedules reach exactly final_lr_fraction * peak at the last step (steps - 1).
`warmup_steps` fixes the warmup in steps, so runs of different lengths share it (a WSD cooldown branched
from a long constant run then equals a run trained straight through).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ("cosine", "wsd", "multistep", "constant")
MILESTONES = (0.8, 0.9)  # multistep's default: the peak for 80% of the steps, 10% at f^(1/2), 10% at f


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer knobs other than the peak learning rate (which is `train.learning_rate`)."""

  schedule: str = "cosine"
  warmup_fraction: float = 0.05
  final_lr_fraction: float = 0.1
  cooldown_fraction: float = 0.2
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  clip_norm: float = 1.0
  warmup_steps: int | None = None  # overrides warmup_fraction when set
  milestones: tuple[float, ...] | None = None  # multistep: fractions of the steps where the LR drops (None: 0.8, 0.9)

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
    for name in ("warmup_fraction", "final_lr_fraction", "cooldown_fraction", "b1", "b2"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"optimizer.{name} must be a number in [0, 1], got {value!r}")
    for name in ("eps", "weight_decay", "clip_norm"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"optimizer.{name} must be a number >= 0, got {value!r}")
    if self.warmup_steps is not None and (
        not isinstance(self.warmup_steps, int) or isinstance(self.warmup_steps, bool) or self.warmup_steps < 0
    ):
      raise ValueError(f"optimizer.warmup_steps must be an integer >= 0 or None, got {self.warmup_steps!r}")
    if self.schedule == "multistep" and self.final_lr_fraction == 0:
      raise ValueError("optimizer.schedule='multistep' drops the LR in equal ratios: it needs final_lr_fraction > 0")
    if self.milestones is not None:
      m = self.milestones
      if (not isinstance(m, (tuple, list)) or not m or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in m)
          or any(not 0 < v < 1 for v in m) or any(b <= a for a, b in zip(m, m[1:]))):
        raise ValueError(f"optimizer.milestones must be increasing fractions in (0, 1) or None, got {m!r}")
      object.__setattr__(self, "milestones", tuple(float(v) for v in m))  # run.json gives a list

  def milestone_steps(self, steps: int) -> tuple[int, ...]:
    """multistep: the first step (0-based) of each stage after the peak, ceil(fraction x steps), at most the last."""
    return tuple(min(math.ceil(round(m * steps, 6)), steps - 1) for m in (self.milestones or MILESTONES))

  def warmup_for(self, steps: int) -> int:
    """Warmup steps of a run of `steps` steps: `warmup_steps` if set, else the rounded fraction."""
    warmup = self.warmup_steps if self.warmup_steps is not None else int(round(self.warmup_fraction * steps))
    return min(warmup, steps)


@gin.configurable("optimizer")
def optimizer_config(
    schedule: str = "cosine",
    warmup_fraction: float = 0.05,
    final_lr_fraction: float = 0.1,
    cooldown_fraction: float = 0.2,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    clip_norm: float = 1.0,
    warmup_steps: int | None = None,
    milestones: tuple[float, ...] | None = None,
) -> OptimizerConfig:
  """The gin knobs `optimizer.*` (explicit, so the operative config records every value)."""
  return OptimizerConfig(
      schedule, warmup_fraction, final_lr_fraction, cooldown_fraction, b1, b2, eps, weight_decay, clip_norm, warmup_steps,
      milestones,
  )


def schedule_args(cfg: OptimizerConfig, peak_lr: float, steps: int) -> dict[str, np.ndarray]:
  """The numbers of a run's schedule (warmup; peak and final LR, decay start and length; or multistep's
  stages), as arrays.

  The train step takes them as an argument rather than baking them in, so that runs differing only in
  their token budget or peak LR (a sweep's neighbours) compile to the same program and share JAX's
  persistent compilation cache.
  """
  warmup = cfg.warmup_for(steps)
  one = np.float32(1)
  # Products and reciprocals rounded in float32 as XLA folded them when these were constants.
  common = {"warmup": np.int32(warmup), "warmup_slope": np.float32(peak_lr) * (one / np.float32(max(warmup, 1)))}
  if cfg.schedule == "multistep":
    starts = cfg.milestone_steps(steps)
    ratios = [cfg.final_lr_fraction ** ((i + 1) / len(starts)) for i in range(len(starts))]
    return {**common, "stage_starts": np.array(starts, np.int32),
            "stage_lrs": np.array([peak_lr] + [peak_lr * r for r in ratios], np.float32)}
  last = steps - 1
  # The decay runs from the last warmup step (at peak) to the last step (at final).
  decay_start = max(warmup - 1, 0)
  if cfg.schedule == "wsd":
    decay_start = max(last - max(int(round(cfg.cooldown_fraction * steps)), 1), decay_start)
  return {
      **common,
      "peak": np.float32(peak_lr),
      "final": np.float32(peak_lr * cfg.final_lr_fraction),
      "span": np.float32(peak_lr - peak_lr * cfg.final_lr_fraction),  # peak - final, rounded once
      "decay_start": np.int32(decay_start),
      "inv_decay_steps": one / np.float32(max(last - decay_start, 1)),
  }


def schedule_from_args(kind: str, args: Mapping[str, Any]) -> optax.Schedule:
  """The learning rate at each step (0-based) of a `kind` schedule with `schedule_args` (arrays or tracers)."""
  if kind == "multistep":
    return _multistep(args)
  peak, final, span = args["peak"], args["final"], args["span"]
  warmup = jnp.asarray(args["warmup"], jnp.float32)
  decay_start = jnp.asarray(args["decay_start"], jnp.float32)

  def schedule(step):
    s = jnp.asarray(step, jnp.float32)
    warm = (s + 1) * args["warmup_slope"]
    t = jnp.clip((s - decay_start) * args["inv_decay_steps"], 0.0, 1.0)
    if kind == "cosine":
      rest = final + span * 0.5 * (1 + jnp.cos(jnp.pi * t))
    elif kind == "wsd":
      rest = peak - span * t
    else:
      rest = jnp.full_like(s, peak)
    return jnp.where(s < warmup, warm, rest)

  return schedule


def _multistep(args: Mapping[str, Any]) -> optax.Schedule:
  """Warmup, then the LR of the stage the step is in (`stage_lrs[i]` from `stage_starts[i - 1]` on)."""
  warmup = jnp.asarray(args["warmup"], jnp.float32)

  def schedule(step):
    s = jnp.asarray(step, jnp.float32)
    stage = jnp.sum(s[..., None] >= jnp.asarray(args["stage_starts"], jnp.float32), axis=-1)
    return jnp.where(s < warmup, (s + 1) * args["warmup_slope"], jnp.asarray(args["stage_lrs"])[stage])

  return schedule


def learning_rate_schedule(cfg: OptimizerConfig, peak_lr: float, steps: int) -> optax.Schedule:
  """The learning rate at each step (0-based) for a run of `steps` optimizer steps."""
  return schedule_from_args(cfg.schedule, schedule_args(cfg, peak_lr, steps))


def decay_mask(params):
  """True for matrices that get weight decay; False for norm scales and biases."""

  def decays(path, _):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    return not any(n.endswith("norm") or n.endswith("bias") for n in names)

  return jax.tree_util.tree_map_with_path(decays, params)


def leaf_name(path) -> str:
  """The last name on a parameter's tree path ('wq', 'embed', 'final_norm', ...)."""
  names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  names = [n for n in names if n not in ("value", "raw_value")]
  return names[-1] if names else ""


def scale_by_lr_multipliers(multiplier: Callable[[str], float], names: Sequence[str]) -> optax.GradientTransformation:
  """Multiplies each parameter's update by multiplier(its name), via optax.partition over labels.

  `names` lists every parameter name; the label of a parameter is its multiplier. After AdamW this
  scales the learning rate and the decoupled weight decay of that parameter alike.
  """

  def labels(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: repr(multiplier(leaf_name(path))), params)

  values = sorted({repr(multiplier(n)) for n in names})
  return optax.partition({label: optax.scale(float(label)) for label in values}, labels)


def make_optimizer(
    cfg: OptimizerConfig,
    schedule: optax.Schedule,
    lr_multiplier: Callable[[str], float] | None = None,
    param_names: Sequence[str] = (),
) -> optax.GradientTransformation:
  """Global-norm clipping, AdamW with the decay mask, then per-parameter LR multipliers (muP) if given.

  `lr_multiplier` maps a parameter name (one of `param_names`) to its learning-rate multiplier.
  """
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  parts.append(
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
  )
  if lr_multiplier is not None:
    parts.append(scale_by_lr_multipliers(lr_multiplier, param_names))
  return optax.chain(*parts)
