"""Scaling laws: named formulas over named columns, with the parametrisation each law is fitted in.

A law maps input columns (`N`, `D`, `C`, `U`, ...) and parameters to a predicted loss. Each law is fitted
in its own *fit space* (`theta`), usually logs of positive constants so that the prediction can be written
as a log-sum-exp (LSE) of linear terms; `public` converts a fitted theta into the published parameter
names (`E`, `A`, `B`, `alpha`, `beta`, ...). Every function takes the array namespace `xp` (numpy or
jax.numpy) first, so one definition serves the batched JAX fit and the numpy-only `scaling predict`.

Users add laws with the `law` decorator (in a Python file passed as `--law_file`) or with a gin file
that binds `expression_law` (see docs/fit.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from scaling.errors import UserError

Cols = Mapping[str, Any]
Theta = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class Law:
  """A scaling law: inputs, fit-space parameters, prediction and the published parameter names."""

  name: str
  formula: str
  inputs: tuple[str, ...]
  theta: tuple[str, ...]
  log_predict: Callable[[Any, Theta, Cols], Any]
  public: Callable[[Theta], dict[str, float]]
  to_theta: Callable[[str, float], tuple[str, float]]
  grid: Mapping[str, Sequence[float]]
  lower: Mapping[str, float] = dataclasses.field(default_factory=dict)
  upper: Mapping[str, float] = dataclasses.field(default_factory=dict)
  optimum: Callable[..., Any] | None = None
  source: str = "builtin"
  # When ln L = LSE over terms that are each linear in theta, the terms as ((param, column|None, sign), ...)
  # with column meaning ln(column) and None meaning 1: the fit then uses a hand-written gradient.
  lse_terms: tuple[tuple[tuple[str, str | None, float], ...], ...] | None = None

  def predict(self, xp: Any, theta: Theta, cols: Cols) -> Any:
    """Predicted loss (nats per token) at the given input columns."""
    return xp.exp(self.log_predict(xp, theta, cols))

  def starts(self, fixed: Mapping[str, float] | None = None) -> np.ndarray:
    """The full grid of fit-space start points, one row per start, over the free parameters."""
    fixed = fixed or {}
    free = [p for p in self.theta if p not in fixed]
    return np.array(list(itertools.product(*(self.grid[p] for p in free))), dtype=np.float64).reshape(-1, len(free))


_REGISTRY: dict[str, Law] = {}


def register(law_: Law) -> Law:
  """Adds a law to the registry under its name (replacing one of the same name)."""
  _REGISTRY[law_.name] = law_
  return law_


def get(name: str) -> Law:
  """The registered law called `name`, or a UserError listing the known ones."""
  if name not in _REGISTRY:
    raise UserError(f"--law={name}: unknown law; known: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]


def names() -> list[str]:
  """Names of all registered laws."""
  return sorted(_REGISTRY)


def _log_of(public_to_log: Mapping[str, str]) -> Callable[[str, float], tuple[str, float]]:
  """A `to_theta` that maps published constants (E, A, ...) to their logs and passes the rest through."""

  def to_theta(name: str, value: float) -> tuple[str, float]:
    if name in public_to_log:
      if value <= 0:
        raise UserError(f"--fix {name}={value}: must be positive")
      return public_to_log[name], math.log(value)
    return name, value

  return to_theta


def _lse(xp: Any, *terms: Any) -> Any:
  """log(sum(exp(terms))) computed stably, broadcasting the terms."""
  out = terms[0]
  for t in terms[1:]:
    out = xp.logaddexp(out, t)
  return out


def _exp(x: float) -> float:
  """exp(x), or inf where a bootstrap sample lies far out (ln A > 709) instead of an OverflowError."""
  return math.exp(x) if x < 709.0 else math.inf


def _f(theta: Theta) -> dict[str, float]:
  return {k: float(v) for k, v in theta.items()}


# --- Chinchilla (Hoffmann et al. 2022): L = E + A / N^alpha + B / D^beta, fitted as LSE(a - alpha ln N, b - beta ln D, e).
def _chinchilla_log(xp: Any, t: Theta, c: Cols) -> Any:
  return _lse(xp, t["a"] - t["alpha"] * xp.log(c["N"]), t["b"] - t["beta"] * xp.log(c["D"]), t["e"] + 0.0 * c["N"])


def _chinchilla_public(t: Theta) -> dict[str, float]:
  t = _f(t)
  return {"E": _exp(t["e"]), "A": _exp(t["a"]), "B": _exp(t["b"]), "alpha": t["alpha"], "beta": t["beta"]}


def chinchilla_optimum(xp: Any, p: Mapping[str, Any], compute: Any, flops_per_nd: float = 6.0) -> tuple[Any, Any]:
  """Compute-optimal (N*, D*) of L = E + A/N^alpha + B/D^beta at C = k N D (closed form, k = 6 by default)."""
  alpha, beta, A, B = p["alpha"], p["beta"], p["A"], p["B"]
  G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
  base = compute / flops_per_nd
  return G * base ** (beta / (alpha + beta)), base ** (alpha / (alpha + beta)) / G


CHINCHILLA = register(Law(
    name="chinchilla",
    formula="L = E + A / N^alpha + B / D^beta",
    inputs=("N", "D"),
    theta=("a", "b", "e", "alpha", "beta"),
    log_predict=_chinchilla_log,
    public=_chinchilla_public,
    to_theta=_log_of({"A": "a", "B": "b", "E": "e"}),
    grid={"alpha": np.arange(0, 2.01, 0.5), "beta": np.arange(0, 2.01, 0.5), "e": np.arange(-1, 1.01, 0.5),
          "a": np.arange(0, 25.01, 5), "b": np.arange(0, 25.01, 5)},
    optimum=chinchilla_optimum,
    lse_terms=((("a", None, 1.0), ("alpha", "N", -1.0)), (("b", None, 1.0), ("beta", "D", -1.0)), (("e", None, 1.0),)),
))


# --- Single power law with an offset in one variable X: L = E + A X^-alpha (e.g. the loss-compute envelope).
def _power_law(x: str) -> Law:
  def log_predict(xp: Any, t: Theta, c: Cols) -> Any:
    return _lse(xp, t["a"] - t["alpha"] * xp.log(c[x]), t["e"] + 0.0 * c[x])

  def public(t: Theta) -> dict[str, float]:
    t = _f(t)
    return {"E": _exp(t["e"]), "A": _exp(t["a"]), "alpha": t["alpha"]}

  return Law(
      name=f"power_{x}" if x != "C" else "power",
      formula=f"L = E + A * {x}^-alpha",
      inputs=(x,),
      theta=("a", "e", "alpha"),
      log_predict=log_predict,
      public=public,
      to_theta=_log_of({"A": "a", "E": "e"}),
      grid={"alpha": np.arange(0, 2.01, 0.1) if x == "C" else np.arange(0, 2.01, 0.25),
            "e": np.arange(-1, 1.51, 0.5), "a": np.arange(0, 60.01, 5)},
      lse_terms=((("a", None, 1.0), ("alpha", x, -1.0)), (("e", None, 1.0),)),
  )


for _x in ("C", "N", "D"):
  register(_power_law(_x))


# --- Kaplan et al. 2020: pure power laws L(N) = (Nc/N)^aN, L(D) = (Dc/D)^aD, L(C) = (Cc/C)^aC, and
# L(N, D) = [(Nc/N)^(aN/aD) + Dc/D]^aD. Fitted in log space: theta holds ln Nc, ln Dc, ln Cc.
def _kaplan_single(x: str) -> Law:
  lc, ax = f"log_{x}c", f"alpha_{x}"

  def log_predict(xp: Any, t: Theta, c: Cols) -> Any:
    return t[ax] * (t[lc] - xp.log(c[x]))

  def public(t: Theta) -> dict[str, float]:
    t = _f(t)
    return {f"{x}c": _exp(t[lc]), ax: t[ax]}

  return Law(
      name=f"kaplan_{x}",
      formula=f"L = ({x}c / {x})^alpha_{x}",
      inputs=(x,),
      theta=(lc, ax),
      log_predict=log_predict,
      public=public,
      to_theta=_log_of({f"{x}c": lc}),
      grid={lc: np.arange(10, 70.1, 10), ax: np.arange(0.02, 0.5, 0.08)},
  )


for _x in ("N", "D", "C"):
  register(_kaplan_single(_x))


def _kaplan_nd_log(xp: Any, t: Theta, c: Cols) -> Any:
  ratio = t["alpha_N"] / t["alpha_D"]
  return t["alpha_D"] * _lse(xp, ratio * (t["log_Nc"] - xp.log(c["N"])), t["log_Dc"] - xp.log(c["D"]))


def _kaplan_nd_public(t: Theta) -> dict[str, float]:
  t = _f(t)
  return {"Nc": _exp(t["log_Nc"]), "Dc": _exp(t["log_Dc"]), "alpha_N": t["alpha_N"], "alpha_D": t["alpha_D"]}


register(Law(
    name="kaplan",
    formula="L = ((Nc / N)^(alpha_N / alpha_D) + Dc / D)^alpha_D",
    inputs=("N", "D"),
    theta=("log_Nc", "log_Dc", "alpha_N", "alpha_D"),
    log_predict=_kaplan_nd_log,
    public=_kaplan_nd_public,
    to_theta=_log_of({"Nc": "log_Nc", "Dc": "log_Dc"}),
    grid={"log_Nc": np.arange(10, 50.1, 10), "log_Dc": np.arange(10, 50.1, 10),
          "alpha_N": np.arange(0.05, 0.5, 0.1), "alpha_D": np.arange(0.05, 0.5, 0.1)},
    lower={"alpha_D": 1e-3},
))


# --- Muennighoff et al. 2023, data-constrained: L = E + A / N'^alpha + B / D'^beta with effective data
# D' = U + U R_D (1 - exp(-R_D_seen / R_D)), R_D_seen = D/U - 1, and effective parameters
# N' = U_N + U_N R_N (1 - exp(-R_N_seen / R_N)), U_N = min(N, N_opt(U)), R_N_seen = N / U_N - 1, where
# N_opt(U) is the compute-optimal N of the base law for U tokens. R_D, R_N here are R_D*, R_N*.
def _muennighoff_log(xp: Any, t: Theta, c: Cols) -> Any:
  N, D, U = c["N"], c["D"], c["U"]
  alpha, beta = t["alpha"], t["beta"]
  log_g = (xp.log(alpha) + t["a"] - xp.log(beta) - t["b"]) / (alpha + beta)
  log_n_opt = log_g * (alpha + beta) / alpha + xp.log(U) * beta / alpha
  u_n = xp.minimum(N, xp.exp(log_n_opt))
  r_d = xp.maximum(D / U - 1.0, 0.0)
  r_n = xp.maximum(N / u_n - 1.0, 0.0)
  d_eff = U * (1.0 + t["R_D"] * (1.0 - xp.exp(-r_d / t["R_D"])))
  n_eff = u_n * (1.0 + t["R_N"] * (1.0 - xp.exp(-r_n / t["R_N"])))
  return _lse(xp, t["a"] - alpha * xp.log(n_eff), t["b"] - beta * xp.log(d_eff), t["e"] + 0.0 * N)


def _muennighoff_public(t: Theta) -> dict[str, float]:
  return {**_chinchilla_public(t), "R_D": float(t["R_D"]), "R_N": float(t["R_N"])}


register(Law(
    name="muennighoff",
    formula=("L = E + A / N'^alpha + B / D'^beta, D' = U (1 + R_D (1 - exp(-(D/U - 1) / R_D))), "
             "N' = U_N (1 + R_N (1 - exp(-(N/U_N - 1) / R_N))), U_N = min(N, N_opt(U))"),
    inputs=("N", "D", "U"),
    theta=("a", "b", "e", "alpha", "beta", "R_D", "R_N"),
    log_predict=_muennighoff_log,
    public=_muennighoff_public,
    to_theta=_log_of({"A": "a", "B": "b", "E": "e"}),
    grid={**CHINCHILLA.grid, "R_D": np.linspace(0, 20, 4)[1:], "R_N": np.linspace(0, 20, 4)[1:]},
    lower={"alpha": 1e-6, "beta": 1e-6, "R_D": 1e-6, "R_N": 1e-6},
))


# --- Gadre et al. 2024, over-training: L(C, M) = E + (a M^eta + b M^-eta) C^-eta with M = D / N the
# token multiplier, fitted as LSE(ln a + eta (ln D - ln N - ln C), ln b - eta (ln D - ln N + ln C), e).
def _overtraining_log(xp: Any, t: Theta, c: Cols) -> Any:
  log_m, log_c = xp.log(c["D"]) - xp.log(c["N"]), xp.log(c["C"])
  return _lse(xp, t["log_a"] + t["eta"] * (log_m - log_c), t["log_b"] - t["eta"] * (log_m + log_c), t["e"] + 0.0 * log_c)


def _overtraining_public(t: Theta) -> dict[str, float]:
  t = _f(t)
  return {"E": _exp(t["e"]), "a": _exp(t["log_a"]), "b": _exp(t["log_b"]), "eta": t["eta"]}


OVERTRAINING = register(Law(
    name="overtraining",
    formula="L = E + (a M^eta + b M^-eta) C^-eta, M = D / N",
    inputs=("N", "D", "C"),
    theta=("log_a", "log_b", "e", "eta"),
    log_predict=_overtraining_log,
    public=_overtraining_public,
    to_theta=_log_of({"a": "log_a", "b": "log_b", "E": "e"}),
    grid={"log_a": np.arange(0, 25.01, 5), "log_b": np.arange(0, 25.01, 5), "e": np.arange(-1, 1.01, 0.5),
          "eta": np.arange(0.05, 1.01, 0.1)},
    lower={"eta": 0.0},
    lse_terms=((("log_a", None, 1.0), ("eta", "D", 1.0), ("eta", "N", -1.0), ("eta", "C", -1.0)),
               (("log_b", None, 1.0), ("eta", "D", -1.0), ("eta", "N", 1.0), ("eta", "C", -1.0)),
               (("e", None, 1.0),)),
))


# --- Downstream metrics as functions of a loss L (the `L` column; the metric is the fitted target).
# Gadre et al. 2024: top-1 error Err(L) = eps - k exp(-gamma L).
def _downstream_exp_log(xp: Any, t: Theta, c: Cols) -> Any:
  return xp.log(t["eps"] - xp.exp(t["log_k"] - t["gamma"] * c["L"]))


register(Law(
    name="downstream_exp",
    formula="Err = eps - k exp(-gamma L)",
    inputs=("L",),
    theta=("eps", "log_k", "gamma"),
    log_predict=_downstream_exp_log,
    public=lambda t: {"eps": float(t["eps"]), "k": _exp(float(t["log_k"])), "gamma": float(t["gamma"])},
    to_theta=_log_of({"k": "log_k"}),
    grid={"eps": np.array([0.25, 0.5, 0.75, 1.0]), "log_k": np.arange(-3, 6.01, 1.0),
          "gamma": np.array([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])},
    lower={"eps": 0.0, "gamma": 0.0},
))


# Bhagia et al. 2024 (OLMo model ladders, step 2): metric(L) = a / (1 + exp(-k (L - L0))) + b of the task loss.
def _downstream_sigmoid_log(xp: Any, t: Theta, c: Cols) -> Any:
  return xp.log(xp.exp(t["log_a"] - xp.logaddexp(0.0, -t["k"] * (c["L"] - t["L0"]))) + t["b"])


register(Law(
    name="downstream_sigmoid",
    formula="Err = a / (1 + exp(-k (L - L0))) + b",
    inputs=("L",),
    theta=("log_a", "b", "k", "L0"),
    log_predict=_downstream_sigmoid_log,
    public=lambda t: {"a": _exp(float(t["log_a"])), "b": float(t["b"]), "k": float(t["k"]), "L0": float(t["L0"])},
    to_theta=_log_of({"a": "log_a"}),
    grid={"log_a": np.log([0.25, 0.5, 0.75, 1.0]), "b": np.array([0.0, 0.1, 0.25, 0.5]),
          "k": np.array([-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0]), "L0": np.arange(0.5, 5.01, 0.5)},
    lower={"b": 0.0},
))

DOWNSTREAM = ("downstream_exp", "downstream_sigmoid")


# --- User-defined laws.
def law(name: str, *, inputs: Sequence[str], grid: Mapping[str, Sequence[float]],
        lower: Mapping[str, float] | None = None, upper: Mapping[str, float] | None = None,
        formula: str = "", source: str = "decorator") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Decorator registering `fn(xp, **columns, **params) -> loss` as a law fitted on log residuals.

  `grid` gives the start values of every parameter (their product is the start grid); the parameters are
  fitted as they are (no log transform), within the optional `lower`/`upper` bounds.
  """

  def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    params = tuple(grid)

    def log_predict(xp: Any, t: Theta, c: Cols) -> Any:
      return xp.log(fn(xp, **{k: c[k] for k in inputs}, **{p: t[p] for p in params}))

    register(Law(
        name=name, formula=formula or f"{fn.__name__}({', '.join(inputs)}; {', '.join(params)})",
        inputs=tuple(inputs), theta=params, log_predict=log_predict, public=_f,
        to_theta=lambda k, v: (k, v), grid={k: np.asarray(v, dtype=np.float64) for k, v in grid.items()},
        lower=dict(lower or {}), upper=dict(upper or {}), source=source))
    return fn

  return wrap


_SAFE_FUNCS = ("exp", "log", "sqrt", "minimum", "maximum", "where", "abs", "tanh", "log1p", "expm1")


def expression_law(name: str, expression: str, inputs: Sequence[str], grid: Mapping[str, Sequence[float]],
                   lower: Mapping[str, float] | None = None, upper: Mapping[str, float] | None = None) -> Law:
  """Registers a law given as a Python expression of columns and parameters (e.g. from a gin file)."""
  try:
    code = compile(expression, f"<law {name}>", "eval")
  except SyntaxError as e:
    raise UserError(f"law {name}: expression {expression!r} is not valid Python: {e.msg}") from None
  unknown = set(code.co_names) - set(inputs) - set(grid) - set(_SAFE_FUNCS)
  if unknown:
    raise UserError(f"law {name}: expression uses unknown names {sorted(unknown)}; "
                    f"inputs are {list(inputs)}, parameters {list(grid)}")

  def fn(xp: Any, **kw: Any) -> Any:
    env = {f: getattr(xp, f) for f in _SAFE_FUNCS}
    return eval(code, {"__builtins__": {}}, {**env, **kw})  # expression vetted above: names only

  law(name, inputs=inputs, grid=grid, lower=lower, upper=upper, formula=f"L = {expression}",
      source=f"expression:{expression}")(fn)
  return get(name)
