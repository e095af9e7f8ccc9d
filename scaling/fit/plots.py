"""Figures of a fit (matplotlib, Agg backend): each function writes PNG and SVG and returns the PNG path.

IsoFLOP curves with their fitted parabolas and minima; compute-optimal N*(C), D*(C) with interval bands
and the extrapolation to a target budget; loss against compute with the envelope and the fitted law;
residuals of a parametric fit; learning curves coloured by model size; a learning-curve law over the measured
curves, with its predictions past the fitted steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
  from scaling.fit.curve_report import CurveView


def pyplot() -> Any:
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig: Any, out: Path) -> Path:
  """Writes `fig` as PNG and SVG next to `out` and closes it; returns the PNG path."""
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(out.with_suffix(".png"), dpi=110)
  fig.savefig(out.with_suffix(".svg"))
  pyplot().close(fig)
  return out.with_suffix(".png")


def _colors(values: np.ndarray) -> Any:
  plt = pyplot()
  logs = np.log(values)
  span = np.ptp(logs) or 1.0
  return plt.cm.viridis((logs - logs.min()) / span)


def isoflop_curves(df: pd.DataFrame, optima: Sequence[Mapping[str, Any]], out: Path, tol: float = 0.1,
                   window: int = 2) -> Path:
  """Loss against N per compute budget, the parabola fitted near each minimum, and the minima."""
  from scaling.fit import isoflop
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  groups = isoflop.budget_ids(df, tol)
  budgets = np.array([isoflop.budget_value(df[groups == g]) for g in np.unique(groups)])
  for g, color in zip(np.unique(groups), _colors(budgets)):
    part = df[groups == g].sort_values("N")
    x, y = np.log(part["N"].to_numpy(np.float64)), part["loss"].to_numpy(np.float64)
    ax.scatter(part["N"], y, color=color, s=14, label=f"C={budgets[g]:.2g}")
    m = isoflop.window(x, y, window)
    if len(np.unique(x[m])) >= 3:
      coef = np.polyfit(x[m], y[m], 2)
      xs = np.linspace(x[m].min(), x[m].max(), 50)
      ax.plot(np.exp(xs), np.polyval(coef, xs), color=color, lw=1)
  opt = pd.DataFrame(list(optima))
  good = opt[opt["ok"]] if len(opt) else opt
  if len(good):
    ax.scatter(good["N_star"], good["L_star"], marker="*", s=90, color="crimson", zorder=5, label="minima")
  ax.set(xscale="log", xlabel="parameters N", ylabel="loss (nats/token)", title="IsoFLOP curves")
  ax.legend(fontsize=7, ncol=2)
  return save_figure(fig, out)


def compute_range(C: Sequence[float] | None, target: float | None = None) -> tuple[float, float]:
  """The compute axis of a figure: the data's C, widened to include the target budget."""
  c = np.asarray([] if C is None else C, np.float64)
  c = c[np.isfinite(c) & (c > 0)]
  if target:
    c = np.append(c, float(target))
  if not len(c):
    raise ValueError("compute_range: no compute values and no target")
  lo, hi = float(c.min()), float(c.max())
  return (hi / 100.0, hi) if lo == hi else (lo, hi)


def compute_optimal(fit_: Mapping[str, Any], out: Path, target: float | None = None,
                    data_C: Sequence[float] | None = None) -> Path:
  """N*(C) and D*(C) with bootstrap bands, over the data's compute (or budgets) out to the target budget."""
  from scaling.fit import predict
  plt = pyplot()
  opt = pd.DataFrame(fit_.get("optima") or [])
  c_lo, c_hi = compute_range(opt["C"] if len(opt) else data_C, target)
  grid = np.geomspace(c_lo, c_hi, 30)
  preds = [predict.optimum_at(fit_, float(c)) for c in grid]
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key, label in ((axes[0], "N", "N*"), (axes[1], "D", "D*")):
    vals = np.array([p[key]["value"] for p in preds])
    ax.plot(grid, vals, color="navy", label=f"fitted {label}(C)")
    if all("interval" in p[key] for p in preds):
      iv = np.array([p[key]["interval"] for p in preds])
      ax.fill_between(grid, iv[:, 0], iv[:, 1], color="navy", alpha=0.2, label=f"{int(100 * fit_.get('level', 0.95))}% interval")
    if len(opt) and f"{key}_star" in opt:
      use = opt[opt.get("ok", True)] if "ok" in opt else opt
      ax.scatter(use["C"], use[f"{key}_star"], color="crimson", s=14, label="per-budget optima", zorder=4)
    if target:
      ax.axvline(target, color="gray", ls="--", lw=1, label=f"target C={target:.3g}")
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=label)
    ax.legend(fontsize=7)
  fig.suptitle("compute-optimal allocation")
  return save_figure(fig, out)


def frontier(df: pd.DataFrame, fits: Mapping[str, Mapping[str, Any]], out: Path, target: float | None = None,
             title: str = "loss against compute") -> Path:
  """Every point's loss against compute and each fit's compute-optimal loss L*(C) with its band, out to the target."""
  from scaling.fit import predict
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  ax.scatter(df["C"], df["loss"], c=_colors(df["N"].to_numpy(np.float64)), s=8, alpha=0.6, label="runs")
  lo, hi = compute_range(df["C"], target)
  grid = np.geomspace(lo, hi, 40)
  for (label, fit_), color in zip(fits.items(), ("crimson", "navy", "darkgreen", "darkorange", "purple")):
    preds = [predict.optimum_at(fit_, float(c))["loss"] for c in grid]
    ax.plot(grid, [p["value"] for p in preds], color=color, lw=1.4, label=f"{label}: L*(C)")
    if all("interval" in p for p in preds):
      iv = np.array([p["interval"] for p in preds])
      ax.fill_between(grid, iv[:, 0], iv[:, 1], color=color, alpha=0.15)
    if target:
      t = predict.optimum_at(fit_, float(target))["loss"]
      ax.scatter([target], [t["value"]], color=color, marker="*", s=80, zorder=5)
  if target:
    ax.axvline(target, color="gray", ls="--", lw=1, label=f"target C={target:.3g}")
  ax.set(xscale="log", xlim=(lo / 1.3, hi * 1.3), xlabel="compute C (FLOPs)", ylabel="loss (nats/token)", title=title)
  ax.legend(fontsize=7)
  return save_figure(fig, out)


def loss_vs_compute(df: pd.DataFrame, fit_: Mapping[str, Any], out: Path, target: float | None = None) -> Path:
  """Every point's loss against compute, the lower envelope and the fitted loss law."""
  from scaling.fit import envelope, predict
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.scatter(df["C"], df["loss"], c=_colors(df["N"].to_numpy(np.float64)), s=6, alpha=0.6, label="points")
  try:
    env = envelope.envelope(df)
    ax.plot(env["C"], env["loss"], color="black", lw=1.2, label="envelope")
  except Exception:  # a single run has no envelope; the plot still shows the points
    pass
  grid = np.geomspace(*compute_range(df["C"], target), 60)
  if "loss_law" in fit_:
    ax.plot(grid, [predict.loss_at(fit_, {"C": float(c)})["value"] for c in grid], color="crimson", label="fitted L(C)")
  elif {"N", "D"} <= set(fit_.get("inputs_used", [])):
    ax.plot(grid, [predict.optimum_at(fit_, float(c))["loss"]["value"] for c in grid], color="crimson",
            label="fitted law at the optimum")
  ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel="loss (nats/token)", title="loss vs compute")
  ax.legend(fontsize=8)
  return save_figure(fig, out)


def residuals(df: pd.DataFrame, fit_: Mapping[str, Any], out: Path) -> Path:
  """Log residuals ln L_pred - ln L_obs of a parametric fit against N and against D."""
  from scaling.fit import laws
  plt = pyplot()
  law = laws.get(fit_["law"])
  pred = law.predict(np, fit_["theta"], {c: df[c].to_numpy(np.float64) for c in law.inputs})
  r = np.log(pred) - np.log(df["loss"].to_numpy(np.float64))
  keys = [c for c in ("N", "D") if c in law.inputs] or list(law.inputs)[:1]
  fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
  for ax, key in zip(axes[0], keys):
    ax.scatter(df[key], r, s=8, c=_colors(df["N"].to_numpy(np.float64)) if "N" in df else None)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhspan(-fit_.get("delta", 1e-3), fit_.get("delta", 1e-3), color="gray", alpha=0.2)
    ax.set(xscale="log", xlabel=key, ylabel="ln L_pred - ln L_obs")
  fig.suptitle(f"residuals of the {law.name} fit")
  return save_figure(fig, out)


def learning_curves(df: pd.DataFrame, out: Path) -> Path:
  """Loss against tokens for every run, coloured by model size."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  sizes = df.groupby("run")["N"].first()
  colors = dict(zip(sizes.index, _colors(sizes.to_numpy(np.float64))))
  for run, part in df.sort_values("D").groupby("run"):
    ax.plot(part["D"], part["loss"], color=colors[run], lw=0.8, marker="." if len(part) < 3 else None)
  sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.matplotlib.colors.LogNorm(sizes.min(), max(sizes.max(), sizes.min() * 1.01)))
  fig.colorbar(sm, ax=ax, label="parameters N")
  ax.set(xscale="log", yscale="log", xlabel="tokens D", ylabel="loss (nats/token)", title="learning curves")
  return save_figure(fig, out)


def curve_loss_range(curves: Sequence[tuple[np.ndarray, np.ndarray]], skip: float = 0.1) -> tuple[float, float]:
  """The loss axis of learning curves: the measured (steps, loss) past the first `skip` of each curve's steps, padded.

  The first steps (and the law at S1 near 0) lie far above the rest; the axis follows the measured losses that
  the comparison is about, as the fit's quality past the first 10% of steps does.
  """
  late = [loss[steps >= steps[0] + skip * (steps[-1] - steps[0])] for steps, loss in curves if len(steps)]
  y = np.concatenate(late) if late else np.array([], np.float64)
  y = y[np.isfinite(y)]
  if not len(y):
    raise ValueError("curve_loss_range: no measured losses")
  lo, hi = float(y.min()), float(y.max())
  pad = 0.05 * (hi - lo) or 0.01 * abs(hi) or 0.01
  return lo - pad, hi + pad


def curve_step_range(steps: Sequence[np.ndarray]) -> tuple[float, float]:
  """The step axis of learning curves: every measured or predicted step, padded by 2%."""
  s = np.concatenate([np.asarray(x, np.float64) for x in steps])
  lo, hi = float(s.min()), float(s.max())
  pad = 0.02 * (hi - lo) or 1.0
  return lo - pad, hi + pad


def curve_law(views: Sequence[CurveView], out: Path, title: str) -> Path:
  """Measured learning curves with a curve law: solid over the fitted steps, dashed with its band where it predicts."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  for v, color in zip(views, plt.cm.tab10(np.arange(len(views)) % 10)):
    ax.scatter(v.steps[v.fitted], v.loss[v.fitted], s=4, color=color, alpha=0.45, lw=0)
    ax.scatter(v.steps[~v.fitted], v.loss[~v.fitted], s=7, facecolors="none", edgecolors=color, alpha=0.45, lw=0.6)
    step, loss = v.law["step"], v.law["loss"]
    end = -np.inf if v.fit_end is None else v.fit_end
    done, past = step <= end, step >= end
    label = f"{v.id} ({v.role})"
    ax.plot(step[done], loss[done], color=color, lw=1.8, zorder=4, label=label if done.any() else None)
    ax.plot(step[past], loss[past], color=color, lw=1.8, ls="--", zorder=4, label=None if done.any() else label)
    if "loss_lo" in v.law:
      ax.fill_between(step[past], v.law["loss_lo"][past], v.law["loss_hi"][past], color=color, alpha=0.25, zorder=3)
  key = [("law over the fitted steps", dict(color="gray", lw=1.3)),
         ("law predicted, band: bootstrap interval", dict(color="gray", lw=1.3, ls="--"))]
  for label, style in key[:1] + (key[1:] if any(v.role != "fitted" for v in views) else []):
    ax.plot([], [], label=label, **style)
  ax.scatter([], [], s=5, color="gray", label="measured, fitted")
  if any((~v.fitted).any() for v in views):
    ax.scatter([], [], s=7, facecolors="none", edgecolors="gray", label="measured, not fitted")
  ax.set(xlim=curve_step_range([s for v in views for s in (v.steps, v.law["step"])]),
         ylim=curve_loss_range([(v.steps, v.loss) for v in views]), xlabel="step", ylabel="loss (nats/token)",
         title=title)
  ax.legend(fontsize=7)
  return save_figure(fig, out)
