"""`scaling report --curve_fit FIT_JSON`: one report section per learning-curve law fit (`scaling fit --law=tissue`).

A curve fit.json holds the law, its parameters with bootstrap samples and where each curve came from (`curves[]`,
and in `load` the table's --columns and --filter), not the points. The section reads the curves again from those
sources, draws them with the law over the steps it was fitted on, and predicts past them with the bootstrap band:
the rest of a partial curve (to the end of its planned schedule, or the points --curve_until left out) and the
curves of a table that --filter left out (held out). A record that is not a curve-law fit, or lacks what the
section needs, is a UserError naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import html
import math
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from scaling.errors import UserError
from scaling.fit import curve_backtest, curve_cli, curve_load, curves, plots, report
from scaling.fit.curves import Curve

DRAW_POINTS = 400  # steps at which the law is evaluated along each curve for the figure
QUALITY_KEYS = ("mean_abs_rel_error", "max_abs_rel_error", "late_mean_abs_rel_error", "late_max_abs_rel_error")


@dataclasses.dataclass(frozen=True)
class CurveView:
  """One measured curve and the law along it: `fitted` marks the points the fit used; past `fit_end` it predicts."""

  id: str
  role: str  # "fitted", "partial" (the law predicts past its fitted steps) or "held out" (not fitted at all)
  steps: np.ndarray
  loss: np.ndarray
  fitted: np.ndarray
  fit_end: int | None  # the last fitted step; None for a held-out curve
  law: Mapping[str, np.ndarray]  # curve_cli.predict_curve's columns: step, loss, and loss_lo, loss_hi with samples


NUMBERS = ("objective", "n_points", "n_curves", "n_starts", "starts_converged")
TEXTS = ("formula", "objective_name")
OBJECTS = ("intervals", "fit_quality", "load", "derived")  # each absent or a JSON object
TEXT_LISTS = ("warnings", "fixed")  # each absent or a list of text


def _number(v: Any) -> bool:
  """True for a finite JSON number (not a bool)."""
  if not isinstance(v, (int, float)) or isinstance(v, bool):
    return False
  try:
    return math.isfinite(v)
  except OverflowError:
    return False


def _texts(v: Any) -> bool:
  """True for a list of strings."""
  return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _first(checks: Sequence[tuple[bool, str]]) -> str | None:
  """The message of the first failed check, or None."""
  return next((message for ok, message in checks if not ok), None)


def _curve_problem(i: int, c: Any) -> str | None:
  """What curves[i] of a record lacks for the report, or None."""
  if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not isinstance(c.get("source"), str):
    return f"curves[{i}] needs an id and a source"
  if not all(_number(c.get(k)) for k in ("first_step", "last_step")):
    return f"curves[{i}] needs numeric first_step and last_step"
  return None


def _uncertainty_problem(fit_: Mapping[str, Any]) -> str | None:
  """What a record's intervals, level or bootstrap samples lack, or None."""
  for k, iv in fit_.get("intervals", {}).items():
    if k not in curves.PARAMS or not isinstance(iv, list) or len(iv) != 2 or not all(map(_number, iv)):
      return f"intervals.{k} is not [low, high] of a parameter of the law"
  boot = fit_.get("bootstrap")
  if (fit_.get("intervals") or boot is not None) and not (_number(fit_.get("level")) and 0 < fit_["level"] < 1):
    return "level is not between 0 and 1"
  if boot is None:
    return None
  if not isinstance(boot, dict) or boot.get("unit") not in ("curve", "residual_block"):
    return "bootstrap.unit is not curve or residual_block"
  samples = boot.get("samples", [])
  thetas = isinstance(samples, list) and all(
      isinstance(x, list) and len(x) == len(curves.PARAMS) and all(map(_number, x)) for x in samples)
  return _first([
      (all(_number(boot.get(k)) for k in ("resamples", "seed")), "bootstrap needs numeric resamples and seed"),
      (thetas, f"bootstrap.samples is not a list of ({', '.join(curves.PARAMS)})"),
  ])


def problem(fit_: Mapping[str, Any]) -> str | None:
  """The first thing a curve-law fit record lacks for its report section, or None when it has everything."""
  params, areas = fit_.get("params"), fit_.get("areas")
  if not isinstance(params, dict):
    return "params is not an object"
  found = _first([
      *((_number(params.get(k)), f"params.{k} is not a number") for k in (*curves.PARAMS, "lambda")),
      (isinstance(areas, dict) and areas.get("momentum_init") in ("zero", "first_lr"),
       "areas.momentum_init is not zero or first_lr"),
      *((_number(fit_.get(k)), f"{k} is not a number") for k in NUMBERS),
      *((isinstance(fit_.get(k), str), f"{k} is not text") for k in TEXTS),
      *((isinstance(fit_.get(k, {}), dict), f"{k} is not an object") for k in OBJECTS),
      *((_texts(fit_.get(k, [])), f"{k} is not a list of text") for k in TEXT_LISTS),
      (isinstance(fit_.get("curves"), list) and bool(fit_.get("curves")), "curves is not a list of the fitted curves"),
  ])
  if found:
    return found
  for i, c in enumerate(fit_["curves"]):
    found = _curve_problem(i, c)
    if found:
      return found
  quality, spec = fit_.get("fit_quality", {}), fit_.get("load", {})
  columns = spec.get("columns") or {}
  return _first([
      (not quality or all(_number(quality.get(k)) for k in QUALITY_KEYS),
       f"fit_quality needs numeric {', '.join(QUALITY_KEYS)}"),
      (isinstance(columns, dict) and all(isinstance(v, str) for v in columns.values()),
       "load.columns is not NAME: column"),
      (isinstance(spec.get("filter") or "", str), "load.filter is not text"),
  ]) or _uncertainty_problem(fit_) or _backtest_problem(fit_.get("lambda_backtest"))


def _backtest_problem(table: Any) -> str | None:
  """What a `lambda_backtest` record (from --lambda_decay auto) lacks for the report, or None."""
  if table is None:
    return None
  rows = table.get("rows") if isinstance(table, dict) else None
  return _first([
      (isinstance(table, dict) and _number(table.get("fraction")) and _number(table.get("chosen"))
       and _texts(table.get("held_out")) and isinstance(rows, list),
       "lambda_backtest needs fraction, chosen, held_out and rows"),
      (all(isinstance(r, dict) and _number(r.get("lambda")) and isinstance(r.get("errors"), dict)
           and all(e is None or _number(e) for e in r["errors"].values())
           and (r.get("mean_abs_error") is None or _number(r.get("mean_abs_error"))) for r in rows or []),
       "lambda_backtest.rows need lambda, errors and mean_abs_error"),
  ])


def read(path: str | Path) -> dict[str, Any]:
  """The curve-law fit record at `path`, checked; a UserError names the file and what is wrong (nothing is executed)."""
  fit_ = curve_cli.read_json(path)
  if not isinstance(fit_, dict):
    raise UserError(f"{path}: not a fit record (a JSON object with a law); --curve_fit takes the fit.json of "
                    "`scaling fit --law=tissue`")
  if not curve_cli.is_curve_law(fit_.get("law")):
    raise UserError(f"{path}: law {fit_.get('law')!r} is not a learning-curve law; --curve_fit takes the fit.json of "
                    f"`scaling fit --law=tissue` (the report fits the other laws from its INPUTs itself)")
  found = problem(fit_)
  if found:
    raise UserError(f"{path}: malformed curve-law fit record: {found}")
  return fit_


def measured(fit_: Mapping[str, Any]) -> tuple[list[Curve], list[Curve]]:
  """Every curve of the record's sources as they read now, and the same read as the fit read them (--filter applied)."""
  spec = fit_.get("load") or {}
  columns, query = spec.get("columns") or {}, spec.get("filter")
  full: list[Curve] = []
  used: list[Curve] = []
  for source in dict.fromkeys(c["source"] for c in fit_["curves"]):
    path = Path(source)
    if path.is_dir():  # from_run_dir names a directory without run.json
      loss_key = next(c.get("loss", "eval_loss") for c in fit_["curves"] if c["source"] == source)
      curve = curve_load.from_run_dir(path, loss_key)
      full.append(curve)
      used.append(curve)
    elif path.is_file():
      every = curve_load.from_table(path, columns)
      full += every
      used += curve_load.from_table(path, columns, query) if query else every
    else:
      raise UserError(f"{path}: no such file or directory")
  return full, used


def draw_steps(curve: Curve, marks: Sequence[float]) -> np.ndarray:
  """Steps of the curve's schedule at which to draw the law: DRAW_POINTS spread over it, plus `marks` inside it."""
  spread = np.linspace(curve.grid[0], curve.grid[-1], DRAW_POINTS).round()
  marks = np.array([m for m in marks if curve.grid[0] <= m <= curve.grid[-1]], np.float64)
  return np.unique(np.concatenate([spread, marks])).astype(np.int64)


def view(fit_: Mapping[str, Any], curve: Curve, used: Curve | None) -> CurveView:
  """One measured curve with the law along it; `used` is the curve as the fit read it (held out when not fitted)."""
  rec = next((c for c in fit_["curves"] if c["id"] == curve.id), None)
  if rec is None or used is None:
    fitted, fit_end, role = np.zeros(len(curve.steps), bool), None, "held out"
  else:
    fit_end = int(rec["last_step"])
    chosen = used.steps[(used.steps >= rec["first_step"]) & (used.steps <= fit_end)]
    fitted = np.isin(curve.steps, chosen)
    role = "partial" if curve.grid[-1] > fit_end else "fitted"
  marks = [*([fit_end] if fit_end is not None else []), curve.steps[-1]]
  law = curve_cli.predict_curve(fit_, curve.grid, curve.eta, draw_steps(curve, marks))
  return CurveView(curve.id, role, curve.steps, curve.loss, fitted, fit_end, law)


def views(fit_: Mapping[str, Any]) -> list[CurveView]:
  """Every curve of the record's sources with the law along it: fitted, partial or held out."""
  full, used = measured(fit_)
  by_id = {c.id: c for c in used}
  missing = [c["id"] for c in fit_["curves"] if c["id"] not in by_id]
  if missing:
    raise UserError(f"curve {missing[0]!r} of the fit is no longer in its source")
  return [view(fit_, c, by_id.get(c.id)) for c in full]


def _interval(lo: float, hi: float) -> str:
  """An interval as text, to 6 significant digits like the rest of the report."""
  return f"[{lo:.6g}, {hi:.6g}]"


def prediction_row(v: CurveView) -> dict[str, Any]:
  """What the law predicts for a partial or held-out curve: at the schedule's end, and at its last unfitted point."""
  step, loss = v.law["step"], v.law["loss"]
  row: dict[str, Any] = {"curve": v.id, "role": v.role, "fitted to step": "none" if v.fit_end is None else v.fit_end,
                         "end step": int(step[-1]), "predicted at end": float(loss[-1])}
  if "loss_lo" in v.law:
    row["interval at end"] = _interval(v.law["loss_lo"][-1], v.law["loss_hi"][-1])
  later = np.flatnonzero(~v.fitted & (v.steps > (-np.inf if v.fit_end is None else v.fit_end)))
  at = np.searchsorted(step, v.steps[later[-1]]) if len(later) else None
  if at is not None and at < len(step) and step[at] == v.steps[later[-1]]:
    observed, predicted = float(v.loss[later[-1]]), float(loss[at])
    row.update({"last unfitted step": int(step[at]), "observed": observed, "predicted": predicted,
                "relative error": f"{predicted / observed - 1:+.3%}"})
  return row


def protocol_html(fit_: Mapping[str, Any]) -> str:
  """How the law was fitted, as the report states each fit's convention: areas, objective, steps and intervals."""
  a, p = fit_["areas"], fit_["params"]
  others = [k for k in fit_.get("fixed", []) if k != "lambda"]
  parts = [f"S1 = {a.get('S1', 'the summed learning rate up to step s')}",
           f"S2 = {a.get('S2', 'the annealing area with momentum')}",
           f"lambda = {p['lambda']:g} ({'chosen by backtest' if fit_.get('lambda_backtest') else 'fixed'}), "
           f"m_0 = {'0' if a['momentum_init'] == 'zero' else 'eta_0'}"
           + (f"; also fixed: {', '.join(map(str, others))}" if others else ""),
           f"objective {fit_['objective_name']}" + (f" (delta {fit_['delta']:g})" if _number(fit_.get("delta")) else "")
           + " summed over every point of every curve; the loss at step s is the loss after the updates of steps <= s"]
  if (fit_.get("load") or {}).get("filter"):
    parts.append(f"rows kept by --filter {fit_['load']['filter']!r}")
  more = [f"intervals: {curve_cli.bootstrap_text(fit_)}" if fit_.get("bootstrap") else "no bootstrap intervals"]
  if fit_.get("fit_quality"):
    more.append(curve_cli.quality_text(fit_["fit_quality"]))
  backtest = (f"<pre>{html.escape(curve_backtest.table_text(fit_['lambda_backtest']))}</pre>"
              if fit_.get("lambda_backtest") else "")
  return (f"<p><b>fitting protocol: learning-curve law, loss against step</b> "
          f"({html.escape('; '.join(parts))}).</p><p>{html.escape('; '.join(more))}.</p>{backtest}")


CURVE_COLUMNS = ("id", "n_points", "first_step", "last_step", "planned_steps", "lr_source", "loss", "state", "source")


def section(path: str, fit_: Mapping[str, Any], out: Path) -> tuple[str, list[str]]:
  """One curve-law fit's section (formula, parameters, protocol, curves, figure, predictions) and its warnings."""
  notes: list[str] = []
  figures: list[Path] = []
  predictions = ""
  try:
    vs = views(fit_)
    figures.append(plots.curve_law(vs, out, f"{fit_['law']} law: measured curves and the fit"))
    rows = [prediction_row(v) for v in vs if v.role != "fitted"]
    if rows:
      predictions = ("<p>Predictions past the fitted steps (partial curves) and for curves the fit left out "
                     "(held out), with the bootstrap interval:</p>"
                     + report.html_table(rows, list(dict.fromkeys(k for r in rows for k in r))))
  except UserError as e:
    notes.append(f"{path}: figure left out, the measured curves cannot be read again: {e}")
  columns = [c for c in CURVE_COLUMNS if any(c in r for r in fit_["curves"])]
  details = (protocol_html(fit_) + "<p>curves fitted:</p>" + report.html_table(fit_["curves"], columns)
             + "".join(f'<p class="warn">{html.escape(n)}</p>' for n in notes) + predictions)
  return report.fit_section(f"learning-curve law {fit_['law']}: {path}", fit_, figures, details), notes


def sections(fits: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[str, list[str]]:
  """The sections of every (path, record) pair, their figures inlined, and every warning."""
  parts, notes = [], []
  with tempfile.TemporaryDirectory() as tmp:
    for i, (path, fit_) in enumerate(fits):
      text, more = section(path, fit_, Path(tmp) / f"curve_law_{i}")
      parts.append(text)
      notes += more
  return "".join(parts), notes
