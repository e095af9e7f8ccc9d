"""AdamW with a learning-rate schedule, global-norm clipping and a weight-decay mask.

Schedules: `cosine` (linear warmup, cosine decay to `final_lr_fraction`), `wsd` (warmup, constant,
then a linear cooldown over the last `cooldown_fraction` of steps to `final_lr_fraction`) and
`constant` (warmup, then constant).
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import optax

SCHEDULES = ("cosine", "wsd", "constant")


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
) -> OptimizerConfig:
  """The gin knobs `optimizer.*` (explicit, so the operative config records every value)."""
  return OptimizerConfig(schedule, warmup_fraction, final_lr_fraction, cooldown_fraction, b1, b2, eps, weight_decay, clip_norm)


def learning_rate_schedule(cfg: OptimizerConfig, peak_lr: float, steps: int) -> optax.Schedule:
  """The learning rate at each step (0-based) for a run of `steps` optimizer steps."""
  warmup = int(round(cfg.warmup_fraction * steps))
  final = peak_lr * cfg.final_lr_fraction
  warm = optax.linear_schedule(0.0, peak_lr, max(warmup, 1))
  if cfg.schedule == "cosine":
    rest = optax.cosine_decay_schedule(peak_lr, max(steps - warmup, 1), alpha=cfg.final_lr_fraction)
  elif cfg.schedule == "wsd":
    cooldown = max(int(round(cfg.cooldown_fraction * steps)), 1)
    stable = max(steps - warmup - cooldown, 0)
    rest = optax.join_schedules(
        [optax.constant_schedule(peak_lr), optax.linear_schedule(peak_lr, final, cooldown)], [stable]
    )
  else:
    rest = optax.constant_schedule(peak_lr)
  if warmup == 0:
    return rest
  return optax.join_schedules([warm, rest], [warmup])


def decay_mask(params):
  """True for matrices that get weight decay; False for norm scales and biases."""

  def decays(path, _):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    return not any(n.endswith("norm") or n.endswith("bias") for n in names)

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
  """Global-norm clipping followed by AdamW with the decay mask."""
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  parts.append(
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
  )
  return optax.chain(*parts)
