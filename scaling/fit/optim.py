"""Batched L-BFGS in JAX: thousands of independent minimisations (grid starts, bootstrap resamples) at once.

Each problem runs its own L-BFGS (history 10, backtracking Armijo line search, optional box bounds by
projection) with scipy's L-BFGS-B stopping rules: converged when the projected gradient's largest entry is
<= gtol or the relative decrease of the objective is <= ftol; a failed line search or the evaluation cap
ends a problem unconverged. All problems advance together inside one jitted `lax.while_loop` that makes one
batched function evaluation per step (a line-search trial for some problems, a new iterate for others);
every `chunk` steps the finished problems are dropped, so a few slow starts do not keep the batch busy.
`minimize_mixed` runs every start in float32 and continues the best ones in float64.

Float64 is needed for 4+ significant digits. We never flip the global `jax_enable_x64` switch: every public
entry point of the fitting code runs inside `x64()` (the `jax.enable_x64` context), so other modules keep
JAX's default 32-bit types.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

HISTORY = 10
GTOL = 1e-5
FTOL = 2.220446049250313e-09  # scipy's default factr (1e7) times machine epsilon
MAX_EVALS = 2000  # function evaluations per problem (line-search trials included)
MAX_LINESEARCH = 40
ARMIJO = 1e-4
POLISH_GTOL = 1e-8  # the float64 finalists go well past scipy's tolerances: A and B are nearly flat directions
POLISH_FTOL = 1e-13
STATUS = {0: "running", 1: "gradient below gtol", 2: "relative decrease below ftol", 3: "line search failed",
          4: "evaluation limit", 5: "objective not finite at start"}


def x64() -> Any:
  """Context in which JAX computes in float64 (fitting needs it; the global default stays 32-bit)."""
  return jax.enable_x64(True)


class _State(NamedTuple):
  x: Any  # current iterate (S, P)
  f: Any
  g: Any
  d: Any  # search direction from x
  t: Any  # step length of the next trial point x + t d
  trials: Any  # rejected trials of the current line search
  s_hist: Any  # (HISTORY, S, P), slot 0 newest
  y_hist: Any
  rho: Any  # (HISTORY, S); 0 marks an empty slot
  done: Any
  status: Any
  nit: Any


def _two_loop(g: Any, s_hist: Any, y_hist: Any, rho: Any) -> Any:
  """L-BFGS direction -H g from the history (slot 0 newest); empty slots have rho = 0 and do nothing."""

  def back(q: Any, hist: tuple[Any, Any, Any]) -> tuple[Any, Any]:
    s, y, r = hist
    a = r * jnp.sum(s * q, axis=-1)
    return q - a[:, None] * y, a

  q, alphas = jax.lax.scan(back, g, (s_hist, y_hist, rho))
  yy = jnp.sum(y_hist[0] * y_hist[0], axis=-1)
  sy = jnp.sum(s_hist[0] * y_hist[0], axis=-1)
  gamma = jnp.where(rho[0] > 0, sy / jnp.where(yy > 0, yy, 1.0), 1.0)

  def forward(r: Any, hist: tuple[Any, Any, Any, Any]) -> tuple[Any, None]:
    s, y, rh, a = hist
    b = rh * jnp.sum(y * r, axis=-1)
    return r + s * (a - b)[:, None], None

  r, _ = jax.lax.scan(forward, gamma[:, None] * q, (s_hist, y_hist, rho, alphas), reverse=True)
  return -r


def _projected_gradient_norm(x: Any, g: Any, lower: Any, upper: Any) -> Any:
  return jnp.max(jnp.abs(x - jnp.clip(x - g, lower, upper)), axis=-1)


@functools.lru_cache(maxsize=None)
def autodiff(fun: Callable[..., Any], per_problem_data: bool = False, per_problem_weights: bool = False) -> Callable[..., Any]:
  """Batched value-and-gradient `vg(X, data, w) -> (f (S,), g (S, P))` of a single-problem `fun(x, data, w)`."""
  return jax.vmap(jax.value_and_grad(fun), in_axes=(0, 0 if per_problem_data else None, 0 if per_problem_weights else None))


def _direction(x: Any, g: Any, s_hist: Any, y_hist: Any, rho: Any, lower: Any, upper: Any) -> tuple[Any, ...]:
  """Search direction and first step length; history is dropped where it gives no descent direction."""
  pinned = ((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0))
  gf = jnp.where(pinned, 0.0, g)
  d = jnp.where(pinned, 0.0, _two_loop(gf, s_hist, y_hist, rho))
  descent = jnp.sum(d * gf, axis=-1) < 0
  d = jnp.where(descent[:, None], d, -gf)
  fresh = ~descent | (rho[0] == 0)
  gnorm = jnp.sqrt(jnp.sum(gf * gf, axis=-1))
  t0 = jnp.where(fresh, jnp.minimum(1.0, 1.0 / jnp.maximum(gnorm, jnp.finfo(x.dtype).tiny)), 1.0)
  keep = descent[None, :]
  return d, t0, jnp.where(keep[..., None], s_hist, 0.0), jnp.where(keep[..., None], y_hist, 0.0), jnp.where(keep, rho, 0.0)


def _start(x0: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, np.ndarray]:
  """Initial state: the first evaluation (a zero step from x0, accepted against f = inf) sets f, g and d."""
  S, P = x0.shape
  z = np.zeros((S, P))
  return {"x": np.clip(x0, lower, upper), "f": np.full(S, np.inf), "g": z, "d": z, "t": np.zeros(S),
          "trials": np.zeros(S, np.int32), "s_hist": np.zeros((HISTORY, S, P)), "y_hist": np.zeros((HISTORY, S, P)),
          "rho": np.zeros((HISTORY, S)), "done": np.zeros(S, bool), "status": np.zeros(S, np.int32),
          "nit": np.full(S, -1, np.int32)}


@functools.partial(jax.jit, static_argnames=("vg",))
def _iterate(vg: Callable[..., Any], state: _State, data: Any, w: Any, lower: Any, upper: Any,
             n_evals: Any, gtol: Any, ftol: Any) -> _State:
  """Runs up to `n_evals` batched evaluations; each moves every unfinished problem one line-search trial.

  A problem whose trial passes the Armijo test takes the step, updates its history and sets up its next
  direction; one whose trial fails shrinks its step (safeguarded quadratic backtracking). So a few problems
  with long line searches never make the whole batch wait.
  """

  def step(carry: tuple[Any, _State]) -> tuple[Any, _State]:
    k, st = carry
    active = ~st.done
    xt = jnp.clip(st.x + st.t[:, None] * st.d, lower, upper)
    ft, gt = vg(xt, data, w)
    slope = jnp.sum(st.g * (xt - st.x), axis=-1)
    finite = jnp.isfinite(ft) & jnp.all(jnp.isfinite(gt), axis=-1)
    acc = active & finite & (ft <= st.f + ARMIJO * slope)
    rej = active & ~acc
    curv = 2.0 * (ft - st.f - slope)
    t_quad = jnp.where(curv > 0, -slope * st.t / jnp.where(curv > 0, curv, 1.0), 0.1 * st.t)
    t_back = jnp.where(finite, jnp.clip(t_quad, 0.1 * st.t, 0.5 * st.t), 0.1 * st.t)
    bad_start = rej & ~jnp.isfinite(st.f)
    ls_fail = rej & (st.trials + 1 >= MAX_LINESEARCH) & ~bad_start

    s, y = xt - st.x, gt - st.g
    sy = jnp.sum(s * y, axis=-1)
    update = acc & (sy > 1e-10 * jnp.sum(y * y, axis=-1))
    push = lambda hist, new: jnp.where(update[None, :, None], jnp.concatenate([new[None], hist[:-1]]), hist)
    s_hist, y_hist = push(st.s_hist, s), push(st.y_hist, y)
    rho = jnp.where(update[None, :], jnp.concatenate([(1.0 / jnp.where(update, sy, 1.0))[None], st.rho[:-1]]), st.rho)
    x = jnp.where(acc[:, None], xt, st.x)
    f = jnp.where(acc, ft, st.f)
    g = jnp.where(acc[:, None], jnp.where(finite[:, None], gt, 0.0), st.g)
    d_new, t_new, s_hist, y_hist, rho = _direction(x, g, s_hist, y_hist, rho, lower, upper)
    gconv = acc & (_projected_gradient_norm(x, g, lower, upper) <= gtol)
    fconv = acc & jnp.isfinite(st.f) & ((st.f - ft) <= ftol * jnp.maximum(jnp.maximum(jnp.abs(st.f), jnp.abs(ft)), 1.0))
    status = jnp.where(bad_start, 5, jnp.where(ls_fail, 3, jnp.where(gconv, 1, jnp.where(fconv, 2, st.status))))
    new = _State(
        x=x, f=f, g=g, d=jnp.where(acc[:, None], d_new, st.d), t=jnp.where(acc, t_new, jnp.where(rej, t_back, st.t)),
        trials=jnp.where(acc, 0, st.trials + rej.astype(jnp.int32)), s_hist=s_hist, y_hist=y_hist, rho=rho,
        done=st.done | bad_start | ls_fail | gconv | fconv, status=status, nit=st.nit + acc.astype(jnp.int32))
    return k + 1, new

  _, state = jax.lax.while_loop(lambda c: (c[0] < n_evals) & jnp.any(~c[1].done), step, (0, state))
  return state


def _bucket(n: int) -> int:
  """Batch size for `n` unfinished problems: a power of 4 (few sizes, so few compilations), at least 64."""
  size = 64
  while size < n:
    size *= 4
  return size


@dataclasses.dataclass
class Result:
  """Outcome of a batch of minimisations, one row per problem, and the solver state to resume from."""

  x: np.ndarray
  fun: np.ndarray
  converged: np.ndarray
  nit: np.ndarray
  status: np.ndarray
  state: dict[str, np.ndarray]
  final: np.ndarray | None = None  # problems finished in float64 (the only ones whose `fun` can be compared)


def minimize(vg: Callable[..., Any], x0: np.ndarray, data: Any, weights: np.ndarray | None = None, *,
             per_problem_data: bool = False, lower: np.ndarray | None = None, upper: np.ndarray | None = None,
             max_evals: int = MAX_EVALS, gtol: float = GTOL, ftol: float = FTOL, chunk: int = 25,
             dtype: Any = np.float64, resume: dict[str, np.ndarray] | None = None) -> Result:
  """Minimises from every row of `x0` (S, P) with the batched value-and-gradient `vg(X, data, w)`.

  `weights` is shared (n,) or per problem (S, n); with `per_problem_data` every leaf of `data` has a leading
  axis of length S; `resume` continues from a previous Result's `state` (history included) instead of x0.
  `vg` must be hashable (the jit cache is keyed on it). Call inside `x64()`.
  """
  x0 = np.asarray(x0, np.float64)
  S, P = x0.shape
  lower = np.full(P, -np.inf) if lower is None else np.asarray(lower, np.float64)
  upper = np.full(P, np.inf) if upper is None else np.asarray(upper, np.float64)
  lo, hi = jnp.asarray(lower, dtype), jnp.asarray(upper, dtype)
  w_axis = 0 if weights is not None and np.ndim(weights) == 2 else None
  w = jnp.asarray(1.0 if weights is None else weights, dtype)
  data = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), data)
  final = _start(x0, lower, upper) if resume is None else {k: v.copy() for k, v in resume.items()}
  if resume is not None:  # re-evaluate at x first (a zero step against f = inf): the precision may differ
    final["done"][:] = False
    final["status"][:] = 0
    final["f"][:] = np.inf
    final["t"][:] = 0.0
    final["nit"] -= 1
  active = np.flatnonzero(~final["done"])
  evals = 0
  while len(active) and evals < max_evals:
    size = len(active) if evals == 0 else _bucket(len(active))
    owner = np.concatenate([active, np.full(size - len(active), active[0])])
    state = _State(**{k: jnp.asarray(_rows(v, owner, k), _dtype(v, dtype)) for k, v in final.items()})
    state = state._replace(done=jnp.asarray(np.arange(size) >= len(active)))
    i = jnp.asarray(owner)
    batch_data = jax.tree_util.tree_map(lambda a: a[i], data) if per_problem_data else data
    while True:
      steps = min(chunk if len(active) > 64 else 4 * chunk, max_evals - evals)
      state = _iterate(vg, state, batch_data, w[i] if w_axis == 0 else w, lo, hi, jnp.int32(steps),
                       jnp.asarray(gtol, dtype), jnp.asarray(ftol, dtype))
      evals += steps
      done = np.asarray(state.done)[:len(active)]
      if evals >= max_evals or done.all() or _bucket(int((~done).sum())) < size:
        break
    host = {k: np.asarray(v) for k, v in state._asdict().items()}
    for k, v in host.items():
      _set_rows(final[k], active, v, k)
    active = active[~done]
  status = final["status"]
  status[(status == 0) & ~final["done"]] = 4
  final["done"][:] = True
  return Result(x=final["x"].copy(), fun=final["f"].copy(), converged=np.isin(status, (1, 2)),
                nit=np.maximum(final["nit"], 0), status=status.copy(), state=final)


_HIST = ("s_hist", "y_hist", "rho")  # per-problem arrays indexed on axis 1


def _dtype(v: np.ndarray, dtype: Any) -> Any:
  return dtype if v.dtype.kind == "f" else v.dtype


def _rows(v: np.ndarray, idx: np.ndarray, key: str) -> np.ndarray:
  return v[:, idx] if key in _HIST else v[idx]


def _set_rows(target: np.ndarray, idx: np.ndarray, v: np.ndarray, key: str) -> None:
  if key in _HIST:
    target[:, idx] = v[:, :len(idx)]
  else:
    target[idx] = v[:len(idx)]


def minimize_mixed(vg: Callable[..., Any], x0: np.ndarray, data: Any, weights: np.ndarray | None = None, *,
                   groups: np.ndarray | None = None, per_problem_data: bool = False, finalists: int = 64,
                   margin: float = 1e-3, **kw: Any) -> Result:
  """Every start runs L-BFGS in float32 (4-8x faster on CPU); the best ones then continue in float64.

  Per group (one group by default; a bootstrap uses one per resample) the starts whose float32 objective is
  within `margin` (relative) of the group's best, at most `finalists` of them, continue from where they
  stopped to float64 convergence; only they can hold the best optimum, since float32 objectives are exact
  to ~1e-6. The other starts keep their float32 outcome. The finalists stop at tighter tolerances than
  scipy's (POLISH_GTOL, POLISH_FTOL) so that 4 significant digits hold even along the flat A/B direction.
  """
  x0 = np.asarray(x0, np.float64)
  groups = np.zeros(len(x0), np.int64) if groups is None else np.asarray(groups)
  first = minimize(vg, x0, data, weights, per_problem_data=per_problem_data, dtype=np.float32, **kw)
  f = np.where(np.isfinite(first.fun), first.fun, np.inf)
  order = np.lexsort((f, groups))
  g_sorted, f_sorted = groups[order], f[order]
  starts_of = np.searchsorted(g_sorted, g_sorted, side="left")
  rank = np.arange(len(order)) - starts_of
  best = f_sorted[starts_of]
  chosen = order[np.isfinite(f_sorted) & (rank < finalists) & (f_sorted <= best + margin * np.abs(best) + 1e-12)]
  take = lambda a: a[chosen]
  resume = {k: _rows(v, chosen, k) for k, v in first.state.items()}
  second = minimize(vg, first.x[chosen], jax.tree_util.tree_map(take, data) if per_problem_data else data,
                    take(weights) if weights is not None and np.ndim(weights) == 2 else weights,
                    per_problem_data=per_problem_data, dtype=np.float64, resume=resume,
                    **{"gtol": POLISH_GTOL, "ftol": POLISH_FTOL, **kw})
  out = Result(x=first.x.copy(), fun=first.fun.astype(np.float64), converged=first.converged.copy(),
               nit=first.nit.copy(), status=first.status.copy(), state={}, final=np.zeros(len(x0), bool))
  out.x[chosen], out.fun[chosen], out.converged[chosen] = second.x, second.fun, second.converged
  out.nit[chosen] = second.nit
  out.status[chosen] = second.status
  out.final[chosen] = True
  return out
