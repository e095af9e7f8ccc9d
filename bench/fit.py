"""Benchmark of the approach-3 fit: a plain scipy loop against our batched JAX L-BFGS, in one run.

Same data (240 points drawn from the Epoch/Chinchilla law with 1% noise), same protocol (LSE form, summed
Huber delta = 1e-3 on log residuals, L-BFGS from each of the 4,500 grid starts, best kept). scipy runs one
L-BFGS-B per start with an exact numpy gradient; ours runs all starts as one jitted batch. Prints both
times, their ratio, whether the optima agree to 4 significant digits, the time of a 1,000-resample
bootstrap by run, and the time of an over-training-law fit plus its 1,000-resample bootstrap (goal: under
5 s together). The last line is one JSON object.

  python bench/fit.py [--scipy-starts K] [--resamples R]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.optimize import minimize

from scaling.fit import bootstrap, laws, parametric, synthetic

DELTA = 1e-3


def data(seed: int = 0):
  """240 points: 8 budgets x 30 sizes, 1% log-normal noise."""
  return synthetic.isoflop_sweep(budgets=np.logspace(18, 22, 8), sizes=30, span=1.25, noise=0.01, seed=seed)


def scipy_objective(theta: np.ndarray, lnN: np.ndarray, lnD: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
  """Summed Huber of LSE log residuals and its exact gradient (numpy)."""
  a, b, e, alpha, beta = theta
  u, v = a - alpha * lnN, b - beta * lnD
  m = np.maximum(np.maximum(u, v), e)
  eu, ev, ee = np.exp(u - m), np.exp(v - m), np.exp(e - m)
  s = eu + ev + ee
  r = m + np.log(s) - y
  h = np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA))
  q = np.clip(r, -DELTA, DELTA) / s
  gu, gv, ge = q * eu, q * ev, q * ee
  return float(h.sum()), np.array([gu.sum(), gv.sum(), ge.sum(), -(gu * lnN).sum(), -(gv * lnD).sum()])


def scipy_fit(df, starts: np.ndarray) -> tuple[np.ndarray, float, int]:
  """The plain loop: one scipy L-BFGS-B per start; returns the best theta, its objective, converged count."""
  args = (np.log(df["N"].to_numpy()), np.log(df["D"].to_numpy()), np.log(df["loss"].to_numpy()))
  best, converged = None, 0
  for x0 in starts:
    res = minimize(scipy_objective, x0, args=args, jac=True, method="L-BFGS-B")
    converged += bool(res.success)
    if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
      best = res
  return best.x, float(best.fun), converged


def overtraining(resamples: int) -> dict[str, float]:
  """Times an over-training-law fit (every grid start) plus a bootstrap by run, warm (after one compiling call)."""
  law = laws.get("overtraining")
  df = synthetic.overtraining_sweep(sizes=np.geomspace(1e7, 3e9, 8), multipliers=(5, 10, 20, 40, 80, 160), noise=0.005)
  t0 = time.perf_counter()
  fit_ = parametric.fit(df, law)
  bootstrap.parametric(df, fit_, resamples, seed=0)
  cold = time.perf_counter() - t0
  t0 = time.perf_counter()
  fit_ = parametric.fit(df, law)
  fit_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  samples = bootstrap.parametric(df, fit_, resamples, seed=1)
  boot_s = time.perf_counter() - t0
  iv = bootstrap.interval(samples[:, law.theta.index("eta")])
  print(f"over-training law: fit {fit_s:.2f} s ({fit_.n_starts} starts, {len(df)} points) + {resamples}-resample "
        f"bootstrap {boot_s:.2f} s = {fit_s + boot_s:.2f} s (goal < 5 s; first calls with compilation {cold:.1f} s); "
        f"eta = {fit_.params['eta']:.4g}, 95% interval [{iv[0]:.4g}, {iv[1]:.4g}]")
  return {"overtraining_fit_s": round(fit_s, 3), "overtraining_bootstrap_s": round(boot_s, 3),
          "overtraining_total_s": round(fit_s + boot_s, 3), "overtraining_first_calls_s": round(cold, 2)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scipy-starts", type=int, default=4500, help="starts for the scipy loop (time is scaled up)")
  parser.add_argument("--resamples", type=int, default=1000)
  args = parser.parse_args()
  law = laws.get("chinchilla")
  df = data()
  starts = law.starts()
  print(f"data: {len(df)} points; starts: {len(starts)}")

  t0 = time.perf_counter()
  ours = parametric.fit(df, law)
  cold = time.perf_counter() - t0
  warm = []
  for _ in range(3):
    t0 = time.perf_counter()
    ours = parametric.fit(df, law)
    warm.append(time.perf_counter() - t0)
  ours_s = float(np.median(warm))
  print(f"ours:  {ours_s:.3f} s per fit (median of 3; first call with compilation {cold:.1f} s); "
        f"objective {ours.objective:.10g}; {ours.starts_converged}/{ours.n_starts} converged")

  sub = starts if args.scipy_starts >= len(starts) else starts[np.random.default_rng(0).choice(len(starts), args.scipy_starts, replace=False)]
  t0 = time.perf_counter()
  x, fun, conv = scipy_fit(df, sub)
  scipy_s = (time.perf_counter() - t0) * len(starts) / len(sub)
  print(f"scipy: {scipy_s:.2f} s for {len(starts)} starts{' (scaled from ' + str(len(sub)) + ')' if len(sub) < len(starts) else ''}; "
        f"objective {fun:.10g}; {conv}/{len(sub)} converged")

  mine = ours.params
  theirs = law.public(dict(zip(law.theta, x)))
  rel = {k: abs(mine[k] - theirs[k]) / abs(theirs[k]) for k in mine}
  same = all(f"{mine[k]:.4g}" == f"{theirs[k]:.4g}" or rel[k] < 5e-5 for k in mine)
  for k in mine:
    print(f"  {k:>6}: ours {mine[k]:.6g}  scipy {theirs[k]:.6g}  rel. diff {rel[k]:.1e}")
  print(f"same optimum to 4 significant digits: {same}")

  t0 = time.perf_counter()
  bootstrap.parametric(df, ours, args.resamples, seed=0)
  boot_cold = time.perf_counter() - t0
  t0 = time.perf_counter()
  samples = bootstrap.parametric(df, ours, args.resamples, seed=1)
  boot_s = time.perf_counter() - t0
  iv = bootstrap.interval(samples[:, law.theta.index("alpha")])
  print(f"bootstrap: {args.resamples} resamples by run in {boot_s:.2f} s (first call with compilation {boot_cold:.1f} s); "
        f"alpha 95% interval [{iv[0]:.4g}, {iv[1]:.4g}]")
  over = overtraining(args.resamples)
  ratio = scipy_s / ours_s
  print(f"speed-up over the scipy loop: {ratio:.1f}x")
  print(json.dumps({"metric": "approach3_fit_speedup_vs_scipy", "value": round(ratio, 2), "scipy_s": round(scipy_s, 3),
                    "ours_s": round(ours_s, 3), "ours_first_call_s": round(cold, 2), "bootstrap_s": round(boot_s, 3),
                    "bootstrap_resamples": args.resamples, "same_optimum_4_sig": same, "points": len(df),
                    "starts": len(starts), **over}))


if __name__ == "__main__":
  main()
