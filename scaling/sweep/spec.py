"""The gin knobs of a sweep: `sweep.*` and its parts (`grid`, `isoflop`, `data_constrained`, `cooldowns`).

A sweep file includes the experiment every run trains (model family, data, optimiser) and adds:

    sweep.name = 'cpu_isoflop'
    sweep.parts = [@isoflop()]          # parts combine: [@grid(), @isoflop(), @cooldowns(), ...]
    isoflop.budgets = [1e12, 3e12, 1e13]
    size_rules.learning_rate = (0.3118, -0.125, 'C')   # eta = 0.3118 C^-0.125 (optional)

Each configurable validates its values and raises ValueError naming the knob; `config.build` turns that
into one line and exit 2. docs/sweeps.md describes every knob; `scaling.sweep.expand` turns a spec into runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import gin

CONVENTIONS = ("chinchilla", "6N", "6N_total")  # `xla` is known only after compiling, so a sweep cannot plan with it
RULE_VARIABLES = ("N", "C")


def _positive_numbers(knob: str, values: Any, *, integer: bool = False, allow_none: bool = True) -> tuple | None:
  """A non-empty tuple of positive (finite) numbers, or None when not given."""
  if values is None:
    if allow_none:
      return None
    raise ValueError(f"{knob} is required")
  if isinstance(values, (int, float)) and not isinstance(values, bool):
    values = [values]
  if isinstance(values, str) or not isinstance(values, Sequence):
    raise ValueError(f"{knob} must be a list of numbers, got {values!r}")
  if len(values) == 0:
    raise ValueError(f"{knob} is empty: give at least one value")
  for v in values:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
      raise ValueError(f"{knob} must hold positive numbers, got {v!r}")
    if integer and v != int(v):
      raise ValueError(f"{knob} must hold whole numbers, got {v!r}")
  return tuple(int(v) if integer else float(v) for v in values)


def _names(knob: str, values: Any) -> tuple[str, ...] | None:
  if values is None:
    return None
  if isinstance(values, str):
    values = [values]
  if not isinstance(values, Sequence) or len(values) == 0:
    raise ValueError(f"{knob} is empty: give at least one size name")
  if not all(isinstance(v, str) for v in values):
    raise ValueError(f"{knob} must hold size names (strings), got {values!r}")
  return tuple(values)


def _sizes(part: str, sizes: Any, params: Any) -> tuple[tuple[str, ...] | None, tuple[float, ...] | None]:
  """A part's model sizes: names from the size table, or target non-embedding parameter counts, not both."""
  names, counts = _names(f"{part}.sizes", sizes), _positive_numbers(f"{part}.params", params)
  if names is not None and counts is not None:
    raise ValueError(f"set {part}.sizes (size names) or {part}.params (target N), not both")
  if names is None and counts is None:
    raise ValueError(f"{part} needs model sizes: set {part}.sizes or {part}.params")
  return names, counts


@dataclasses.dataclass(frozen=True)
class Grid:
  """Model sizes x token budgets (absolute, per parameter, or epochs of a unique-token budget)."""

  sizes: tuple[str, ...] | None
  params: tuple[float, ...] | None
  tokens: tuple[float, ...] | None
  tokens_per_param: tuple[float, ...] | None
  unique_tokens: tuple[float, ...] | None
  epochs: tuple[float, ...] | None
  bindings: tuple[str, ...] = ()
  kind: str = "grid"
  scope: str = ""  # the gin scope of a part used twice (`@b2/grid()`), shown as `b2/grid`


@dataclasses.dataclass(frozen=True)
class IsoFLOP:
  """Compute budgets; per budget, `sizes` model sizes spread evenly in log N over `spread` around a centre."""

  budgets: tuple[float, ...]
  sizes: int
  spread: float
  tokens_per_param: float
  prior_fit: str | None
  centre: float | None = None
  bindings: tuple[str, ...] = ()
  kind: str = "isoflop"
  scope: str = ""  # the gin scope of a part used twice (`@b2/grid()`), shown as `b2/grid`


@dataclasses.dataclass(frozen=True)
class Cooldowns:
  """Per size, one constant-LR run and WSD cooldowns branched from its checkpoints at each token budget."""

  sizes: tuple[str, ...] | None
  params: tuple[float, ...] | None
  tokens: tuple[float, ...] | None
  tokens_per_param: tuple[float, ...] | None
  cooldown_fraction: float
  warmup_steps: int | None
  bindings: tuple[str, ...] = ()
  kind: str = "cooldowns"
  scope: str = ""  # the gin scope of a part used twice (`@b2/grid()`), shown as `b2/grid`


@dataclasses.dataclass(frozen=True)
class SizeRules:
  """Hyper-parameters that follow the run's size: power laws coefficient * X^exponent, X = N or C."""

  learning_rate: tuple[float, float, str] | None
  batch_tokens: tuple[float, float, str] | None
  batch_multiple: int
  min_batch: int
  max_batch: int | None


@dataclasses.dataclass(frozen=True)
class SweepSpec:
  """A whole sweep: its parts crossed with seeds, the counting convention, the step floor and the size rules."""

  name: str
  parts: tuple
  seeds: tuple[int, ...]
  convention: str
  min_steps: int
  mesh: str
  expected_mfu: float
  rules: SizeRules


# What the expansion plans for every run (its shape, N, D, C, steps, batch): a part may not override it.
PLANNED_KNOBS = ("model.size", "model.params", "model.width", "model.depth", "model.heads", "model.kv_heads",
                 "model.mlp_width", "model.head_dim", "model.mlp_ratio", "model.mlp", "model.min_aspect",
                 "model.max_aspect", "model.min_depth", "model.max_depth", "model.tie_embeddings", "train.tokens",
                 "train.seq_len", "train.global_batch", "train.seed", "train.unique_tokens", "data.tokenizer", "data.vocab_size")


def _bindings(knob: str, values: Any) -> tuple[str, ...]:
  """A part's own gin bindings ('optimizer.b2 = 0.99', ...): applied to its runs after the sweep's.

  A binding of a planned knob is refused: the table, spec.json and the fitter would show the planned N, D
  and C while the run trained another. `train.learning_rate` may be set (an LR ablation); the run's spec
  then records that value.
  """
  if values is None:
    return ()
  if isinstance(values, str):
    values = [values]
  if not isinstance(values, Sequence) or not all(isinstance(v, str) and "=" in v and "." in v.split("=")[0] for v in values):
    raise ValueError(f"{knob} must be a list of gin bindings such as 'optimizer.b2 = 0.99', got {values!r}")
  for v in values:
    key = v.split("=")[0].strip().split("/")[-1]
    if key in PLANNED_KNOBS:
      raise ValueError(f"{knob}: {v!r} sets {key}, which the sweep plans for every run (its shape, N, D, C or "
                       "batch would be wrong); put it in the base of a separate sweep file")
  bound_learning_rate(values)
  return tuple(" ".join(v.split()) for v in values)


def bound_learning_rate(bindings: Sequence[str]) -> float | None:
  """The `train.learning_rate` a part's bindings set (the last one), or None."""
  value = None
  for v in bindings:
    key, _, text = v.partition("=")
    if key.strip().split("/")[-1] == "train.learning_rate":
      try:
        value = float(text.strip())
      except ValueError:
        raise ValueError(f"part bindings: {v!r}: train.learning_rate must be a number here") from None
  return value


def _token_budgets(part: str, tokens: Any, tokens_per_param: Any, required: bool = True):
  d, r = _positive_numbers(f"{part}.tokens", tokens), _positive_numbers(f"{part}.tokens_per_param", tokens_per_param)
  if d is not None and r is not None:
    raise ValueError(f"set {part}.tokens or {part}.tokens_per_param, not both")
  if required and d is None and r is None:
    raise ValueError(f"{part} needs token budgets: set {part}.tokens or {part}.tokens_per_param")
  return d, r


@gin.configurable("grid")
def grid(sizes: Sequence[str] | None = None, params: Sequence[float] | None = None,
         tokens: Sequence[float] | None = None, tokens_per_param: Sequence[float] | None = None,
         unique_tokens: Sequence[float] | None = None, epochs: Sequence[float] | None = None,
         bindings: Sequence[str] | None = None) -> Grid:
  """Sizes (`sizes` names or `params` target N) x budgets (`tokens`, `tokens_per_param`, or `epochs` of each
  `unique_tokens`) x the sweep's seeds; `bindings` are gin bindings of this part's runs only (an ablation)."""
  names, counts = _sizes("grid", sizes, params)
  u, e = _positive_numbers("grid.unique_tokens", unique_tokens), _positive_numbers("grid.epochs", epochs)
  d, r = _token_budgets("grid", tokens, tokens_per_param, required=e is None)
  if e is not None and (u is None or d is not None or r is not None):
    raise ValueError("grid.epochs needs grid.unique_tokens and replaces grid.tokens / grid.tokens_per_param")
  return Grid(names, counts, d, r, u, e, _bindings("grid.bindings", bindings), scope=gin.current_scope_str())


@gin.configurable("data_constrained")
def data_constrained(sizes: Sequence[str] | None = None, params: Sequence[float] | None = None,
                     unique_tokens: Sequence[float] | None = None, epochs: Sequence[float] | None = None,
                     bindings: Sequence[str] | None = None) -> Grid:
  """Sizes x unique-token budgets U x epochs (D = epochs x U): the data-constrained grid of Muennighoff et al."""
  names, counts = _sizes("data_constrained", sizes, params)
  u = _positive_numbers("data_constrained.unique_tokens", unique_tokens, allow_none=False)
  e = _positive_numbers("data_constrained.epochs", epochs, allow_none=False)
  return Grid(names, counts, None, None, u, e, _bindings("data_constrained.bindings", bindings), kind="data_constrained",
              scope=gin.current_scope_str())


@gin.configurable("isoflop")
def isoflop(budgets: Sequence[float] = gin.REQUIRED, sizes: int = 5, spread: float = 8.0,
            tokens_per_param: float = 20.0, prior_fit: str | None = None, centre: float | None = None,
            bindings: Sequence[str] | None = None) -> IsoFLOP:
  """Compute budgets C (FLOPs, in the sweep's convention); `sizes` sizes per budget spread over a factor
  `spread` in N around a centre: the N with D/N = `tokens_per_param`, the N* of `prior_fit` (a fit.json),
  or `centre` (one N, in the sweep's convention, for every budget)."""
  c = _positive_numbers("isoflop.budgets", budgets, allow_none=False)
  if isinstance(sizes, bool) or not isinstance(sizes, int) or sizes < 1:
    raise ValueError(f"isoflop.sizes must be a whole number >= 1, got {sizes!r}")
  if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread >= 1:
    raise ValueError(f"isoflop.spread (largest N / smallest N of a budget) must be >= 1, got {spread!r}")
  if sizes > 1 and spread == 1:
    raise ValueError("isoflop.spread must be > 1 when isoflop.sizes > 1")
  (r,) = _positive_numbers("isoflop.tokens_per_param", tokens_per_param, allow_none=False)
  if prior_fit is not None and not isinstance(prior_fit, str):
    raise ValueError(f"isoflop.prior_fit must be the path of a fit.json, got {prior_fit!r}")
  if centre is not None:
    (centre,) = _positive_numbers("isoflop.centre", centre, allow_none=False)
    if prior_fit is not None:
      raise ValueError("set isoflop.centre or isoflop.prior_fit, not both")
  return IsoFLOP(c, sizes, float(spread), r, prior_fit, centre, _bindings("isoflop.bindings", bindings),
                 scope=gin.current_scope_str())


@gin.configurable("cooldowns")
def cooldowns(sizes: Sequence[str] | None = None, params: Sequence[float] | None = None,
              tokens: Sequence[float] | None = None, tokens_per_param: Sequence[float] | None = None,
              cooldown_fraction: float = 0.2, warmup_steps: int | None = None,
              bindings: Sequence[str] | None = None) -> Cooldowns:
  """Per size, a constant-LR run and WSD cooldowns (the last `cooldown_fraction` of each budget's steps)
  branched from its checkpoints at every token budget (Hägele et al. 2024). `warmup_steps` (shared by all
  of a size's runs) defaults to optimizer.warmup_fraction of the smallest budget's steps."""
  names, counts = _sizes("cooldowns", sizes, params)
  d, r = _token_budgets("cooldowns", tokens, tokens_per_param)
  if isinstance(cooldown_fraction, bool) or not isinstance(cooldown_fraction, (int, float)) or not 0 < cooldown_fraction < 1:
    raise ValueError(f"cooldowns.cooldown_fraction must be in (0, 1), got {cooldown_fraction!r}")
  if warmup_steps is not None and (isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0):
    raise ValueError(f"cooldowns.warmup_steps must be a whole number >= 0, got {warmup_steps!r}")
  return Cooldowns(names, counts, d, r, float(cooldown_fraction), warmup_steps, _bindings("cooldowns.bindings", bindings),
                   scope=gin.current_scope_str())


def _rule(knob: str, value: Any) -> tuple[float, float, str] | None:
  if value is None:
    return None
  if (isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 3
      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[:2]) or value[2] not in RULE_VARIABLES):
    raise ValueError(f"{knob} must be (coefficient, exponent, 'N' or 'C'), got {value!r}")
  if not value[0] > 0:
    raise ValueError(f"{knob}: the coefficient must be positive, got {value[0]!r}")
  return float(value[0]), float(value[1]), value[2]


@gin.configurable("size_rules")
def size_rules(learning_rate: Sequence | None = None, batch_tokens: Sequence | None = None, batch_multiple: int = 8,
               min_batch: int = 8, max_batch: int | None = None) -> SizeRules:
  """`learning_rate` and `batch_tokens` (tokens per step) as (coefficient, exponent, 'N' or 'C'); None keeps
  train.learning_rate / train.global_batch. The batch in sequences is rounded to `batch_multiple` and kept
  within [min_batch, max_batch]; the step floor may lower it, never below `min_batch`."""
  for knob, value in (("batch_multiple", batch_multiple), ("min_batch", min_batch)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"size_rules.{knob} must be a whole number >= 1, got {value!r}")
  if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < min_batch):
    raise ValueError(f"size_rules.max_batch must be a whole number >= size_rules.min_batch, got {max_batch!r}")
  return SizeRules(_rule("size_rules.learning_rate", learning_rate), _rule("size_rules.batch_tokens", batch_tokens),
                   batch_multiple, min_batch, max_batch)


@gin.configurable("sweep")
def sweep_spec(name: str = gin.REQUIRED, parts: Sequence = gin.REQUIRED, seeds: Sequence[int] = (0,),
               convention: str = "chinchilla", min_steps: int = 500, mesh: str = "-1x1x1",
               expected_mfu: float = 0.3) -> SweepSpec:
  """The sweep: a `name`, its `parts`, crossed with `seeds`; budgets and N counted under `convention`; every
  run gets at least `min_steps` optimizer steps; `expected_mfu` only sizes the --dry-run time estimates."""
  if not isinstance(name, str) or not name or "/" in name:
    raise ValueError(f"sweep.name must be a non-empty name without '/', got {name!r}")
  if isinstance(parts, (Grid, IsoFLOP, Cooldowns)):
    parts = [parts]
  if not isinstance(parts, Sequence) or len(parts) == 0:
    raise ValueError("sweep.parts is empty: list at least one of @grid(), @isoflop(), @data_constrained(), @cooldowns()")
  for part in parts:
    if not isinstance(part, (Grid, IsoFLOP, Cooldowns)):
      raise ValueError(f"sweep.parts holds {part!r}; use @grid(), @isoflop(), @data_constrained() or @cooldowns()")
  if isinstance(seeds, int) and not isinstance(seeds, bool):
    seeds = [seeds]
  if not isinstance(seeds, Sequence) or len(seeds) == 0 or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
    raise ValueError(f"sweep.seeds must be a non-empty list of whole numbers, got {seeds!r}")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"sweep.seeds repeats a seed: {list(seeds)}")
  if convention not in CONVENTIONS:
    raise ValueError(f"sweep.convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
  if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 1:
    raise ValueError(f"sweep.min_steps must be a whole number >= 1, got {min_steps!r}")
  if isinstance(expected_mfu, bool) or not isinstance(expected_mfu, (int, float)) or not 0 < expected_mfu <= 1:
    raise ValueError(f"sweep.expected_mfu must be in (0, 1], got {expected_mfu!r}")
  return SweepSpec(name, tuple(parts), tuple(seeds), convention, min_steps, str(mesh), float(expected_mfu), size_rules())


@gin.configurable("sweep_point")
def sweep_point(sweep: str | None = None, part: str | None = None, budget: float | None = None,
                convention: str | None = None, role: str | None = None, scope: str | None = None) -> dict | None:
  """What a run is within its sweep (written by the sweep, recorded in run.json `sweep`; None outside a sweep).

  `budget` is the planned compute budget C of an IsoFLOP run (in `convention`): the fitter groups runs
  by it instead of by the C each one happens to reach. `role` is `cooldown_parent` for the constant-LR
  run that cooldowns branch from (its own end is no point of a law), `cooldown` for a branch. `scope` is
  the gin scope of a part used twice (`@b2/grid()`: 'b2'), '' otherwise.
  """
  if sweep is None:
    return None
  return {"name": sweep, "part": part, "budget": budget, "convention": convention, "role": role, "scope": scope or ""}
