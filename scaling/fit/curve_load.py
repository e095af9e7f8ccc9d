"""Learning curves for the curve law: from run directories (through scaling.runs) or tables of step, lr, loss.

Run directories: one curve per run, its `eval_loss` (or `train_loss`) records. metrics.jsonl holds a record
every `log_every` steps, so the learning rate of the steps in between is rebuilt exactly from run.json's
optimizer and train settings with scaling.optim.learning_rate_schedule (checked against the logged `lr`);
a run whose logged LR disagrees (or lacks those settings) has its LR interpolated between records instead.
`curves[].lr_source` in fit.json says which. Tables (CSV/TSV, '#' comment lines): columns `step`, `lr`,
`loss` and optionally `run` (the curve id); the LR is interpolated linearly between rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from scaling import runs
from scaling.errors import UserError
from scaling.fit import load, schedules
from scaling.fit.curves import Curve

LOSS_KEYS = ("eval_loss", "train_loss")
LR_RTOL = 1e-5  # the logged lr is float32


def _read_csv(path: Path) -> pd.DataFrame:
  try:
    return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", comment="#")
  except (OSError, ValueError) as e:
    raise UserError(f"{path}: cannot read table: {str(e).splitlines()[0]}") from None


def _column(df: pd.DataFrame, path: Path, name: str, columns: Mapping[str, str]) -> pd.Series:
  src = columns.get(name, name)
  if src not in df.columns:
    raise UserError(f"{path}: missing column {src!r} (the curve law needs columns step, lr, loss; "
                    f"columns are {', '.join(map(str, df.columns))}; map others with --columns {name}=...)")
  values = pd.to_numeric(df[src], errors="coerce")
  bad = np.flatnonzero(~np.isfinite(values.to_numpy(np.float64)))
  if len(bad):
    raise UserError(f"{path}: column {src!r} row {bad[0] + 1}: {df[src].iloc[bad[0]]!r} is not a finite number")
  return values


def _check_curve(path: Path, curve_id: str, steps: np.ndarray, lr: np.ndarray, loss: np.ndarray) -> None:
  bad = np.flatnonzero(np.diff(steps) <= 0)
  if len(bad):
    raise UserError(f"{path}: curve {curve_id!r}: steps must increase (step {steps[bad[0] + 1]:g} after "
                    f"{steps[bad[0]]:g}); give each curve its own `run` id")
  if np.any(lr < 0):
    raise UserError(f"{path}: curve {curve_id!r}: negative learning rate at step {steps[np.argmax(lr < 0)]:g}")
  if np.any(loss <= 0):
    raise UserError(f"{path}: curve {curve_id!r}: non-positive loss at step {steps[np.argmax(loss <= 0)]:g}")


def from_table(path: str | Path, columns: Mapping[str, str] | None = None, query: str | None = None) -> list[Curve]:
  """Curves from a table with columns step, lr, loss and optional run (mapped by `columns`), rows kept by `query`."""
  path, columns = Path(path), dict(columns or {})
  df = _read_csv(path)
  if query:
    try:
      df = df.query(query)
    except Exception as e:  # pandas raises many types for a bad expression
      raise UserError(f"--filter {query!r} on {path}: {str(e).splitlines()[0]}") from None
  if df.empty:
    raise UserError(f"{path}: table has no rows" + (f" matching --filter {query!r}" if query else ""))
  step, lr, loss = (_column(df, path, k, columns).to_numpy(np.float64) for k in ("step", "lr", "loss"))
  run_col = columns.get("run", "run")
  ids = df[run_col].astype(str).to_numpy() if run_col in df.columns else np.full(len(df), path.stem)
  out = []
  for curve_id in dict.fromkeys(ids):
    sel = ids == curve_id
    s, e, y = step[sel], lr[sel], loss[sel]
    _check_curve(path, curve_id, s, e, y)
    grid, eta = schedules.per_step(s, e)
    out.append(Curve(curve_id, s.astype(np.int64), y, grid, eta,
                     {"source": str(Path(path).absolute()), "lr_source": "interpolated", "planned_steps": int(s[-1])}))
  return out


def planned_schedule(info: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
  """(steps 1..N, LR of each step) rebuilt from run.json's optimizer and train settings, if it has them."""
  if not all(k in info for k in ("optimizer", "train", "steps")):
    return None
  import jax.numpy as jnp

  from scaling.optim import OptimizerConfig, learning_rate_schedule
  try:
    cfg = OptimizerConfig(**info["optimizer"])
    steps = int(info["steps"])
    schedule = learning_rate_schedule(cfg, float(info["train"]["learning_rate"]), steps)
  except (TypeError, ValueError, KeyError):
    return None
  return np.arange(1, steps + 1), np.asarray(schedule(jnp.arange(steps)), np.float64)


def _run_rates(run_dir: Path, info: Mapping[str, Any], rec_steps: np.ndarray,
               rec_lr: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
  """The per-step LR of a run: its planned schedule when it matches the logged lr, else interpolated."""
  planned = planned_schedule(info)
  if planned is not None:
    grid, eta = planned
    inside = rec_steps <= grid[-1]
    if np.all(inside) and np.allclose(eta[rec_steps - 1], rec_lr, rtol=LR_RTOL, atol=0):
      return grid, eta, "schedule"
  grid, eta = schedules.per_step(rec_steps.astype(np.float64), rec_lr)
  return grid, eta, "interpolated"


def from_run_dir(run_dir: str | Path, loss_key: str = "eval_loss") -> Curve:
  """The learning curve of one run directory (its `loss_key` records), read through scaling.runs."""
  run_dir = Path(run_dir)
  if loss_key not in LOSS_KEYS:
    raise UserError(f"--curve_loss={loss_key!r}: expected one of {', '.join(LOSS_KEYS)}")
  if not (run_dir / "run.json").is_file():
    raise UserError(f"{run_dir}: no run.json (not a run directory: give a run directory or a CSV of step, lr and loss)")
  info = runs.read_json(run_dir / "run.json")
  records = runs.read_metrics(run_dir)
  with_lr = [r for r in records if "lr" in r and "step" in r]
  if len(with_lr) < 2:
    raise UserError(f"{run_dir}: metrics.jsonl has {len(with_lr)} records with step and lr; a curve needs more")
  rec_steps = np.array([int(r["step"]) for r in with_lr])
  rec_lr = np.array([float(r["lr"]) for r in with_lr])
  grid, eta, source = _run_rates(run_dir, info, rec_steps, rec_lr)
  points = [(int(r["step"]), float(r[loss_key])) for r in with_lr if r.get(loss_key) is not None]
  if not points:
    raise UserError(f"{run_dir}: metrics.jsonl has no {loss_key!r} records")
  steps, loss = (np.array(v) for v in zip(*points))
  _check_curve(run_dir / "metrics.jsonl", info.get("run_id", run_dir.name), steps, eta[np.searchsorted(grid, steps)], loss)
  meta = {"source": str(run_dir.absolute()), "lr_source": source, "loss": loss_key, "state": runs.read_status(run_dir)["state"],
          "planned_steps": int(info.get("steps", grid[-1]))}
  return Curve(str(info.get("run_id", run_dir.name)), steps, loss, grid, eta, meta)


def _run_dirs(path: Path) -> list[Path]:
  if (path / "run.json").is_file():
    return [path]
  found = sorted(p.parent for p in path.rglob("run.json"))
  if not found:
    raise UserError(f"{path}: directory holds no run.json (not a run directory or sweep root)")
  return found


def load_curves(inputs: Iterable[str], columns: str | None = None, loss_key: str = "eval_loss",
                query: str | None = None) -> list[Curve]:
  """Every curve of every input (tables, run directories, sweep roots)."""
  inputs = list(inputs)
  if not inputs:
    raise UserError("no INPUT given: pass run directories, a sweep root or a table of step, lr, loss")
  mapping = load.parse_columns(columns)
  out: list[Curve] = []
  for item in inputs:
    path = Path(item)
    if path.is_dir():
      out.extend(from_run_dir(p, loss_key) for p in _run_dirs(path))
    elif path.is_file():
      out.extend(from_table(path, mapping, query))
    else:
      raise UserError(f"{path}: no such file or directory")
  ids = [c.id for c in out]
  dup = next((i for i in ids if ids.count(i) > 1), None)
  if dup is not None:
    raise UserError(f"curve {dup!r} appears twice in the inputs: give each curve its own run id")
  return out


def truncate(curve: Curve, until: float | None, start: float | None = None) -> Curve:
  """The curve's points at steps in [start, until] (a value < 1 is a fraction of its planned steps)."""
  planned = curve.meta.get("planned_steps", int(curve.steps[-1]))
  to_step = lambda v: v * planned if 0 < v < 1 else v
  lo = -np.inf if start is None else to_step(start)
  hi = np.inf if until is None else to_step(until)
  keep = (curve.steps >= lo) & (curve.steps <= hi)
  if not keep.any():
    raise UserError(f"curve {curve.id!r}: no points between steps {lo:g} and {hi:g}")
  last = int(curve.steps[keep][-1])
  on = curve.grid <= last
  return Curve(curve.id, curve.steps[keep], curve.loss[keep], curve.grid[on], curve.eta[on],
               {**curve.meta, "fit_steps": [int(curve.steps[keep][0]), last]})
