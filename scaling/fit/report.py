"""`scaling report`: one self-contained HTML page (inline PNG figures) with every fit the data allows.

Approach 3 always; approach 2 when the final points cover 2+ budgets with 3+ sizes each; approach 1 when
2+ runs have learning curves. The page lists the fitted laws to 6 significant digits with intervals,
the runs, the predictions at the target budgets (10x and 100x the largest by default) and all warnings.
Learning-curve law fits (`--curve_fit`) get their sections from scaling.fit.curve_report, added through `extra`.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from scaling.errors import UserError
from scaling.fit import isoflop, load, pipeline, plots

CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
        "font-size:13px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "th{background:#f0f0f0}img{max-width:100%}.warn{color:#a40}code{background:#f4f4f4}")


def _g(x: Any) -> str:
  """A number to 6 significant digits (an int too large for a float as it is), anything else as escaped text."""
  if isinstance(x, (float, int, np.floating)) and not isinstance(x, bool):
    try:
      return f"{x:.6g}"
    except OverflowError:
      pass
  return html.escape(str(x))


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  """An HTML table of `rows` (numbers to 6 significant digits, text escaped)."""
  head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
  body = "".join("<tr>" + "".join(f"<td>{_g(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def html_img(path: Path) -> str:
  """A PNG inlined as a data URI, so the page is one self-contained file."""
  return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _params(fit_: Mapping[str, Any]) -> str:
  rows = []
  values = {**fit_["params"], **{f"derived.{k}": v for k, v in fit_.get("derived", {}).items()}}
  for k, v in values.items():
    iv = fit_.get("intervals", {}).get(k)
    rows.append({"parameter": k.replace("derived.", ""), "value": v, "interval": f"[{_g(iv[0])}, {_g(iv[1])}]" if iv else ""})
  return html_table(rows, ["parameter", "value", "interval"])


def _origin(fit_: Mapping[str, Any]) -> str:
  """Where a fit's points came from: runs, or curves for a learning-curve law (whose record counts curves)."""
  return f"{fit_['n_curves']} curve(s)" if "n_curves" in fit_ else f"{fit_['n_runs']} runs"


def fit_section(title: str, fit_: Mapping[str, Any], figures: Sequence[Path], details: str = "") -> str:
  """One fit: its formula, objective, parameters with intervals, warnings, `details` (HTML) and figures."""
  info = (f"objective {fit_.get('objective_name', 'least squares')} = {_g(fit_['objective'])}"
          + (f"; {fit_['starts_converged']} of {fit_['n_starts']} starts converged" if "n_starts" in fit_ else ""))
  warn = "".join(f'<p class="warn">warning: {html.escape(w)}</p>' for w in fit_.get("warnings", []))
  return (f"<h2>{html.escape(title)}</h2><p><code>{html.escape(fit_.get('formula', ''))}</code></p>"
          f"<p>{info}; {fit_['n_points']} points from {_origin(fit_)}.</p>{_params(fit_)}{warn}{details}"
          + "".join(html_img(f) for f in figures))


def page(inputs: Sequence[str], body: str) -> str:
  """The whole self-contained HTML page: title, the inputs it was made from, then `body`."""
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>scaling report</title><style>{CSS}</style>"
          f"</head><body><h1>scaling-law report</h1><p>inputs: {html.escape(', '.join(map(str, inputs)))}</p>"
          f"{body}</body></html>")


COLLAPSE_ROWS = 20  # tables longer than this are folded into a <details> element


def _collapsed(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], what: str) -> str:
  """A table, folded under a one-line summary when it has more than COLLAPSE_ROWS rows."""
  body = html_table(rows, columns)
  if len(rows) <= COLLAPSE_ROWS:
    return body
  return f"<details><summary>{len(rows)} {html.escape(what)} (click to show)</summary>{body}</details>"


def _has_isoflops(final: pd.DataFrame, tol: float) -> bool:
  groups = isoflop.budget_ids(final, tol)
  sizes = final.groupby(groups)["N"].nunique()
  return int((sizes >= 3).sum()) >= 2


def convention_html(convention: Mapping[str, Any]) -> str:
  """The counting convention of N and C, and why it is the one used."""
  name = convention.get("name", "as given")
  why = convention.get("why") or ("a label of the table; N and C are the table's columns "
                                 f"(N: {convention.get('N', '?')}, C: {convention.get('C', '?')})")
  return (f"<p><b>counting convention: {html.escape(str(name))}</b> ({html.escape(str(why))}). "
          f"N = {html.escape(str(convention.get('N', '?')))}, C = {html.escape(str(convention.get('C', '?')))}.</p>")


def _budgets_section(final: pd.DataFrame, tol: float) -> str:
  """Which compute budgets the IsoFLOP analysis found, and how."""
  found = isoflop.budgets_found(final, tol)
  how = found[0]["found_by"] if found else "none"
  return (f"<h2>compute budgets</h2><p>{len(found)} budget(s) found among {len(final)} final points "
          f"({html.escape(how)}; --budget_tol={tol:g}).</p>"
          + _collapsed(found, ["C", "points", "sizes", "C_min", "C_max"], "budgets"))


def _interval_text(t: Mapping[str, Any]) -> str:
  """An interval as text, or empty when there is none."""
  return f"[{_g(t['interval'][0])}, {_g(t['interval'][1])}]" if "interval" in t else ""


def _comparison(df: pd.DataFrame, convention: Mapping[str, Any], opts: pipeline.Options, inputs: Sequence[str],
                budgets: Sequence[float], out: Path, main: Mapping[str, Any] | None) -> tuple[str, list[str]]:
  """The section comparing every applicable law: extrapolations with intervals and, with 2+ budgets, a backtest."""
  from scaling.fit import select
  final = load.select(df, "final")
  names = select.applicable(final)
  if len(names) < 2:
    return "", []
  notes, fits = [], {}
  for name in names:
    if main is not None and main.get("law") == name:
      fits[name] = main
      continue
    try:
      fits[name] = pipeline.run(df, convention, dataclasses.replace(opts, law=name, approach=3, points="final", holdout=None), inputs)
    except UserError as e:
      notes.append(f"law comparison: {name} skipped: {e}")
  rows = []
  for name, fit_ in fits.items():
    for c in budgets:
      t = pipeline.targets(fit_, [c])
      if t:
        rows.append({"law": name, "C": c, "L*": t[0]["loss"]["value"], "L* interval": _interval_text(t[0]["loss"]),
                     "N*": t[0]["N"]["value"], "D*": t[0]["D"]["value"]})
  section = ("<h2>laws compared</h2><p>Every applicable law fitted to all final points; their compute-optimal loss "
             "extrapolated to the targets with bootstrap intervals.</p>"
             + html_table(rows, ["law", "C", "L*", "L* interval", "N*", "D*"])
             + html_img(plots.frontier(final.reset_index(drop=True), fits, out / "laws", max(budgets), "laws compared")))
  if len(np.unique(isoflop.budget_ids(final, opts.budget_tol))) >= 3:
    try:
      table, _ = select.backtest(df, convention, dataclasses.replace(opts, bootstrap=0, holdout="largest"), inputs, names)
      section += ("<p>Backtest: each law fitted without the runs at the largest budget, scored on them "
                  "(what <code>--law=auto --holdout=largest</code> keeps: the lowest error).</p>"
                  + html_table([{"law": r["law"], "mean |relative error|": f"{r['mean_abs_relative_error']:.3%}",
                             "AIC": r["aic"], "held-out runs": len(r["held_out"])} for r in table],
                           ["law", "mean |relative error|", "AIC", "held-out runs"]))
    except UserError as e:
      notes.append(f"law comparison: backtest skipped: {e}")
  return section, notes


def build(df: pd.DataFrame, convention: Mapping[str, Any], opts: pipeline.Options, inputs: Sequence[str],
          targets: Sequence[float], law_source: str | None = None, extra: str = "") -> str:
  """Runs the fits and returns the report page as one HTML string; `extra` (HTML sections) goes before the runs."""
  if opts.law == "auto":
    raise UserError("--law=auto: the report compares every applicable law itself; name the law of its main fit")
  load.require(df, ["N", "D", "C", "loss"], "scaling report")
  final = df[df["final"].astype(bool)]
  budgets = list(targets) or [float(df["C"].max()) * 10, float(df["C"].max()) * 100]
  sections, predictions, notes, opening = [], [], [], ""
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp)
    curves = df.groupby("run").size()
    if (curves >= 2).sum() >= 2:
      sections.append(f"<h2>learning curves</h2>{html_img(plots.learning_curves(df, out / 'curves'))}")
    fits = []
    fit3 = None
    if len(final) >= 2:
      fit3 = pipeline.run(df, convention, dataclasses.replace(opts, approach=3, points="final"), inputs)
      if law_source and fit3.get("law_source") == "decorator":
        fit3["law_source"] = law_source
      figs = [plots.residuals(final.reset_index(drop=True), fit3, out / "residuals")]
      if {"N", "D"} <= set(fit3.get("inputs_used", [])):
        figs.append(plots.compute_optimal(fit3, out / "optimal3", max(budgets), final["C"]))
        opening = (f"<h2>loss against compute</h2><p>Final points and the {html.escape(fit3['law'])} fit's "
                   f"compute-optimal frontier L*(C), extrapolated to the target C = {_g(max(budgets))} with its "
                   f"{int(100 * opts.level)}% interval.</p>"
                   + html_img(plots.frontier(final.reset_index(drop=True), {fit3["law"]: fit3}, out / "frontier", max(budgets))))
      fits.append(("approach 3: parametric fit", fit3, figs))
    else:
      notes.append("approach 3 skipped: fewer than 2 finished runs")
    if len(final) and _has_isoflops(final.reset_index(drop=True), opts.budget_tol):
      sections.insert(0, _budgets_section(final.reset_index(drop=True), opts.budget_tol))
      try:
        fit2 = pipeline.run(df, convention, dataclasses.replace(opts, approach=2, points="final"), inputs)
        figs = [plots.isoflop_curves(final.reset_index(drop=True), fit2["optima"], out / "isoflop", opts.budget_tol,
                                     opts.window), plots.compute_optimal(fit2, out / "optimal2", max(budgets))]
        fits.append(("approach 2: IsoFLOP minima", fit2, figs))
      except UserError as e:
        notes.append(f"approach 2 skipped: {e}")
    else:
      notes.append("approach 2 skipped: needs 2+ compute budgets with 3+ model sizes each")
    if (curves >= 2).sum() >= 2:
      try:
        fit1 = pipeline.run(df, convention, dataclasses.replace(opts, approach=1, points="all"), inputs)
        fits.append(("approach 1: loss envelope", fit1, [plots.loss_vs_compute(df, fit1, out / "envelope", max(budgets))]))
      except UserError as e:
        notes.append(f"approach 1 skipped: {e}")
    else:
      notes.append("approach 1 skipped: needs learning curves (2+ checkpoints) of 2+ runs")
    if not fits:
      raise UserError("scaling report: no approach can be fitted to this input (need 2+ finished runs)")
    if len(final) >= 2:
      comparison, more = _comparison(df, convention, opts, inputs, budgets, out, fit3)
      notes += more
      sections.insert(0, comparison)
    for title, fit_, figs in fits:
      sections.append(fit_section(title, fit_, figs))
      for t in pipeline.targets(fit_, budgets):
        predictions.append({"approach": fit_["approach"], "C": t["C"], **{
            f"{k}*": t[k]["value"] for k in ("N", "D", "loss")}, **{
            f"{k}* interval": _interval_text(t[k]) for k in ("N", "D", "loss") if "interval" in t[k]}})
  runs = (df.sort_values("D").groupby("run").agg(N=("N", "first"), D=("D", "last"), C=("C", "last"),
                                                  loss=("loss", "last"), points=("loss", "size")).reset_index())
  # Which runs give a law its final point: finished runs (a cooldown sweep's constant-LR parent does not).
  finished = set(df.loc[df["final"].astype(bool), "run"]) if "final" in df.columns else set(runs["run"])
  runs["final point"] = runs["run"].isin(finished).map({True: "yes", False: "no"})
  return page(inputs, convention_html(convention) + opening
              + "".join(f"<p class='warn'>{html.escape(n)}</p>" for n in notes)
              + "<h2>predictions</h2>" + html_table(predictions, list(dict.fromkeys(k for p in predictions for k in p)))
              + "".join(sections) + extra + "<h2>runs</h2>"
              + _collapsed(runs.to_dict("records"), list(runs.columns), "runs"))
