"""The demo's analysis of a sweep root: fit its IsoFLOP runs (approaches 2 and 3, bootstrap over runs),
predict the compute-optimal run at `demo.target_factor` x the largest budget, and, once that run (part
scope `target`) is trained, compare prediction and measurement. Writes ROOT/demo/fit_approach3.json,
fit_approach2.json, prediction.json and ROOT/report.html.

This file is also the script `analysis/demo.py` (a link to it), so the analysis re-runs on any sweep root
with IsoFLOP runs:

    python analysis/demo.py ROOT [--out ROOT/report.html]
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from scaling import runs
from scaling.demo import recipe
from scaling.errors import UserError
from scaling.fit import load, pipeline, plots, predict, report
from scaling.sweep import root as root_lib

DEMO_DIR = "demo"
TARGET_SCOPE = "target"
FIT3, FIT2, PREDICTION, REPORT = "fit_approach3.json", "fit_approach2.json", "prediction.json", "report.html"


def runs_table(root: Path) -> pd.DataFrame:
  """One row per run of the root: its plan (part, budget, shape, N, D, C, batch, LR) and state and final loss."""
  rows = []
  for s in root_lib.read_specs(root):
    state = runs.read_status(root / s.run_id)["state"]
    evals = [r for r in runs.read_metrics(root / s.run_id) if r.get("eval_loss") is not None and r.get("tokens")]
    rows.append({"run": s.run_id, "part": s.part, "scope": s.get("scope", ""), "budget": s.budget,
                 "shape": f"{s.shape.width}x{s.shape.depth}", "N": s.N, "tokens": s.tokens, "D": s.tokens_actual, "C": s.C,
                 "D/N": s.tokens_per_param, "batch": s.global_batch, "lr": s.learning_rate, "steps": s.steps,
                 "state": state, "loss": evals[-1]["eval_loss"] if state == "done" and evals else None,
                 "convention": s.convention})
  return pd.DataFrame(rows)


def sweep_runs(table: pd.DataFrame) -> pd.DataFrame:
  """The root's IsoFLOP runs (the target run is not one)."""
  return table[(table["part"] == "isoflop") & (table["scope"] != TARGET_SCOPE)]


def target_runs(table: pd.DataFrame, prediction: Mapping[str, Any] | None = None) -> pd.DataFrame:
  """The root's target runs; with a prediction, only the one that tests it."""
  out = table[table["scope"] == TARGET_SCOPE]
  if prediction is not None:
    t = prediction["target"]
    out = out[out["run"] == t["run"]] if "run" in t else out[(out["shape"] == t["shape"]) & (out["tokens"] == int(t["D"]))]
  return out


def fit(root: Path, table: pd.DataFrame, settings: recipe.Settings, run_ids: set[str] | None = None,
        save: bool = True) -> tuple[pd.DataFrame, dict, dict]:
  """Approach 3 (Chinchilla law) and approach 2 (IsoFLOP minima) on the sweep's finished runs (those of
  `run_ids`, else every IsoFLOP run of the root), written under ROOT/demo/ when `save`. Returns the sweep's
  points and the two fit records."""
  sweep = sweep_runs(table)
  if run_ids is not None:
    sweep = sweep[sweep["run"].isin(run_ids)]
  if sweep.empty:
    raise UserError(f"{root}: no IsoFLOP runs to fit")
  convention = str(sweep["convention"].iloc[0])
  df, conv = load.load([str(Path(root) / rid) for rid in sweep["run"]], convention=convention)
  opts = pipeline.Options(bootstrap=settings.bootstrap, seed=settings.seed, level=settings.level, points="final")
  fit3 = pipeline.run(df, conv, dataclasses.replace(opts, approach=3), [str(root)])
  fit2 = pipeline.run(df, conv, dataclasses.replace(opts, approach=2), [str(root)])
  if save:
    out = Path(root) / DEMO_DIR
    out.mkdir(exist_ok=True)
    for name, fit_ in ((FIT3, fit3), (FIT2, fit2)):
      runs.write_text_atomic(out / name, json.dumps(fit_, indent=1, default=float) + "\n")
  return df, fit3, fit2


def predict_target(fit3: Mapping[str, Any], fit2: Mapping[str, Any], compute: float, shape: str, N: float,
                   tokens: int, flops_per_token: float) -> dict[str, Any]:
  """The prediction the target run tests: the compute-optimal N*, D*, L* at `compute` (approaches 3 and 2),
  and approach 3's loss at the shape actually trained (N, `tokens`), each with its bootstrap interval."""
  return {
      "C": compute, "convention": fit3["convention"].get("name"), "level": fit3.get("level"),
      "approach3": predict.optimum_at(fit3, compute), "approach2": predict.optimum_at(fit2, compute),
      "target": {"shape": shape, "N": N, "D": tokens, "flops_per_token": flops_per_token,
                 "C": flops_per_token * tokens},
      "loss": predict.loss_at(fit3, {"N": N, "D": float(tokens)}),
      "sweep_runs": list(fit3.get("runs", [])),
  }


def plan_target(fit3: Mapping[str, Any], fit2: Mapping[str, Any], compute: float, base: Any) -> tuple[dict[str, Any], Any]:
  """The prediction at `compute` and the size that tests it: the size rule's shape nearest approach 2's N*
  (under the sweep's convention), trained on D = C / its FLOPs per token.

  Approach 2's N*(C) is a power law through the measured minima of the budgets; approach 3's allocation
  rests on its ratio beta / (alpha + beta), which a narrow range of budgets leaves loose (docs/demo.md).
  """
  from scaling.sweep import expand

  convention = fit3["convention"]["name"]
  n_star = predict.optimum_at(fit2, compute)["N"]["value"]
  size = expand.size_near(base, convention, n_star)
  tokens = int(round(compute / size.flops_per_token))
  return predict_target(fit3, fit2, compute, size.label, size.N, tokens, size.flops_per_token), size


def settings_record(settings: recipe.Settings) -> dict[str, Any]:
  """The settings a prediction depends on: another value makes a new prediction."""
  return {"target_factor": settings.target_factor, "bootstrap": settings.bootstrap, "level": settings.level,
          "seed": settings.seed}


def comparison(prediction: Mapping[str, Any], measured: float) -> dict[str, Any]:
  """Predicted against measured final loss: relative error and whether the interval holds the measurement."""
  loss = prediction["loss"]
  out = {"predicted": loss["value"], "measured": measured,
         "relative_error": (loss["value"] - measured) / measured}
  if "interval" in loss:
    lo, hi = loss["interval"]
    out.update(interval=[lo, hi], inside=bool(lo <= measured <= hi))
  return out


def error_line(cmp: Mapping[str, Any], level: float) -> str:
  """The demo's last line: the prediction error."""
  if "interval" in cmp:
    iv = (f", {int(round(100 * level))}% interval [{cmp['interval'][0]:.4f}, {cmp['interval'][1]:.4f}]; measured "
          f"{cmp['measured']:.4f}, {'inside' if cmp['inside'] else 'OUTSIDE'} the interval")
  else:
    iv = f"; measured {cmp['measured']:.4f}"
  return f"prediction error {cmp['relative_error']:+.2%} (predicted {cmp['predicted']:.4f}{iv})"


# --- the report ----------------------------------------------------------------------------------------


def _prediction_plot(final: pd.DataFrame, fit3: Mapping[str, Any], prediction: Mapping[str, Any],
                     measured: float | None, out: Path) -> Path:
  """Sweep points, the fitted frontier L*(C) with its band out to the target, the predicted loss of the target
  run with its interval, and the measured one."""
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  sc = ax.scatter(final["C"], final["loss"], c=np.log10(final["N"]), cmap="viridis", s=22, label="sweep runs (final)")
  fig.colorbar(sc, ax=ax, label="log10 N")
  target = float(prediction["C"])
  grid = np.geomspace(float(final["C"].min()) / 1.3, target * 1.5, 40)
  preds = [predict.optimum_at(fit3, float(c))["loss"] for c in grid]
  ax.plot(grid, [p["value"] for p in preds], color="crimson", lw=1.4, label="approach 3: L*(C)")
  if all("interval" in p for p in preds):
    iv = np.array([p["interval"] for p in preds])
    ax.fill_between(grid, iv[:, 0], iv[:, 1], color="crimson", alpha=0.15)
  loss = prediction["loss"]
  c_t = prediction["target"]["C"]
  yerr = None
  if "interval" in loss:
    yerr = [[loss["value"] - loss["interval"][0]], [loss["interval"][1] - loss["value"]]]
  ax.errorbar([c_t], [loss["value"]], yerr=yerr, fmt="o", color="black", capsize=5,
              label=f"predicted {prediction['target']['shape']} ({int(round(100 * prediction['level']))}% interval)")
  if measured is not None:
    ax.scatter([c_t], [measured], marker="*", s=160, color="gold", edgecolor="black", zorder=6, label="measured")
  ax.set(xscale="log", xlabel=f"compute C (FLOPs, {prediction['convention']} convention)",
         ylabel="validation loss (nats/byte)", title="the target run: predicted against measured")
  ticks = sorted({float(f"{c:.2g}") for c in final["C"]} | {float(f"{c_t:.2g}")})  # the budgets and the target
  ax.set_xticks(ticks, [f"{t:.2g}".replace("e+", "e") for t in ticks])
  ax.tick_params(axis="x", labelrotation=45, labelsize=8)
  ax.xaxis.set_minor_formatter(plt.NullFormatter())
  ax.legend(fontsize=7)
  return plots.save_figure(fig, out)


def _target_curve_plot(root: Path, target: pd.DataFrame, prediction: Mapping[str, Any], out: Path) -> Path | None:
  if target.empty:
    return None
  records = [r for r in runs.read_metrics(root / target["run"].iloc[0]) if r.get("eval_loss") is not None and r.get("tokens")]
  if not records:
    return None
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot([r["tokens"] for r in records], [r["eval_loss"] for r in records], marker=".", label="target run: eval loss")
  loss = prediction["loss"]
  ax.axhline(loss["value"], color="crimson", lw=1, label="predicted final loss")
  if "interval" in loss:
    ax.axhspan(*loss["interval"], color="crimson", alpha=0.12)
  ax.set(xscale="log", xlabel="tokens", ylabel="validation loss (nats/byte)", title="the target run's learning curve")
  ax.legend(fontsize=8)
  return plots.save_figure(fig, out)


def _held(target: Mapping[str, Any]) -> str:
  """The target's batch and LR, and the rules' values where they were held to the sweep's ranges."""
  if "global_batch" not in target:  # a prediction made before the demo held the target's batch and LR
    return ""
  batch, lr, rules = target["global_batch"], target["learning_rate"], target["rules"]
  said = ("" if (rules["global_batch"], rules["learning_rate"]) == (batch, lr) else
          f"; the size rules said batch {rules['global_batch']}, LR {rules['learning_rate']:.4g}, outside the sweep's ranges")
  return f"; batch {batch} sequences, LR {lr:.4g}{said}"


def _headline(prediction: Mapping[str, Any], cmp: Mapping[str, Any] | None) -> str:
  level = int(round(100 * prediction["level"]))
  t = prediction["target"]
  a3, a2, loss = prediction["approach3"], prediction["approach2"], prediction["loss"]

  def iv(r: Mapping[str, Any]) -> str:
    return f"[{r['interval'][0]:.4g}, {r['interval'][1]:.4g}]" if "interval" in r else ""

  rows = [
      {"": "approach 3: compute-optimal", "N": f"{a3['N']['value']:.4g} {iv(a3['N'])}",
       "D": f"{a3['D']['value']:.4g} {iv(a3['D'])}", "loss": f"{a3['loss']['value']:.4f} {iv(a3['loss'])}"},
      {"": "approach 2: compute-optimal", "N": f"{a2['N']['value']:.4g} {iv(a2['N'])}",
       "D": f"{a2['D']['value']:.4g} {iv(a2['D'])}", "loss": f"{a2['loss']['value']:.4f} {iv(a2['loss'])}"},
      {"": f"trained: {t['shape']}, nearest approach 2's N* (approach 3's loss at its N, D){_held(t)}",
       "N": f"{t['N']:.4g}", "D": f"{t['D']:.4g}", "loss": f"{loss['value']:.4f} {iv(loss)}"},
  ]
  if cmp is not None:
    rows.append({"": "measured", "loss": f"{cmp['measured']:.4f}"})
  text = (f"<p>Target budget C = {prediction['C']:.3g} FLOPs ({html.escape(str(prediction['convention']))} convention), "
          f"{level}% bootstrap intervals over resamples of the sweep's runs.</p>")
  text += report.html_table(rows, ["", "N", "D", "loss"])
  if cmp is not None:
    inside = "" if "inside" not in cmp else (" inside" if cmp["inside"] else " <b>outside</b>")
    text += (f"<p class='big'><b>prediction error {cmp['relative_error']:+.2%}</b>: the measured loss lies{inside} "
             f"the {level}% interval.</p>")
  else:
    text += "<p>The target run has not finished yet.</p>"
  return text


def build_report(root: Path, table: pd.DataFrame, df: pd.DataFrame, fit3: Mapping[str, Any], fit2: Mapping[str, Any],
                 prediction: Mapping[str, Any], cmp: Mapping[str, Any] | None, checks: list[str]) -> str:
  """The demo's report: one self-contained HTML page."""
  final = df[df["final"].astype(bool)].reset_index(drop=True)
  target = target_runs(table, prediction)
  sections = []
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp)
    sections.append("<h2>predicted against measured</h2>" + _headline(prediction, cmp)
                    + report.html_img(_prediction_plot(final, fit3, prediction, cmp["measured"] if cmp else None, out / "pred")))
    curve = _target_curve_plot(root, target, prediction, out / "target")
    if curve is not None:
      sections.append(report.html_img(curve))
    sections.append("<h2>the sweep</h2><p>"
                    + (html.escape("; ".join(checks)) if checks else "Every budget's lowest loss lies inside its swept "
                       "sizes (the optimum is bracketed).") + "</p>"
                    + report.html_img(plots.isoflop_curves(final, fit2["optima"], out / "isoflop"))
                    + report.html_img(plots.learning_curves(df, out / "curves")))
    sections.append(report.fit_section("approach 3: parametric fit L(N, D) = E + A/N^alpha + B/D^beta", fit3,
                                        [plots.compute_optimal(fit3, out / "opt3", prediction["C"], final["C"]),
                                         plots.residuals(final, fit3, out / "res3")]))
    sections.append(report.fit_section("approach 2: IsoFLOP minima", fit2,
                                        [plots.compute_optimal(fit2, out / "opt2", prediction["C"])]))
  table = table[table["run"].isin(set(fit3["runs"]) | set(target["run"]))]
  rows = table.drop(columns=["convention"]).to_dict("records")
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>scaling demo</title><style>{report.CSS}"
          ".big{font-size:18px}</style></head><body><h1>scaling demo: predict a larger run, then train it</h1>"
          f"<p>sweep root: <code>{html.escape(str(root))}</code></p>" + report.convention_html(fit3["convention"])
          + "".join(sections) + "<h2>runs</h2>" + report.html_table(rows, [c for c in table.columns if c != "convention"])
          + "</body></html>")


def write_report(root: Path, text: str, out: Path | None = None) -> Path:
  """Writes the report page (default ROOT/report.html)."""
  path = Path(out) if out else Path(root) / REPORT
  runs.write_text_atomic(path, text)
  return path


def read_prediction(root: Path, sweep_ids: set[str], settings: recipe.Settings | None = None) -> dict[str, Any] | None:
  """The stored prediction, if it was made from exactly these sweep runs (and these settings): a resumed demo
  reuses it, a changed sweep or setting makes a new one."""
  path = Path(root) / DEMO_DIR / PREDICTION
  if not path.is_file():
    return None
  stored = runs.read_json(path)
  if set(stored.get("sweep_runs", [])) != sweep_ids:
    return None
  if settings is not None and stored.get("settings") != settings_record(settings):
    return None
  return stored


def write_prediction(root: Path, prediction: Mapping[str, Any]) -> None:
  """Stores the prediction under ROOT/demo/ (atomically)."""
  (Path(root) / DEMO_DIR).mkdir(exist_ok=True)
  runs.write_text_atomic(Path(root) / DEMO_DIR / PREDICTION, json.dumps(prediction, indent=1, default=float) + "\n")


def analyse(root: Path, settings: recipe.Settings, fitted: tuple[pd.DataFrame, dict, dict] | None = None,
            out: Path | None = None) -> tuple[Path, dict[str, Any] | None]:
  """The analysis of a sweep root: fits (unless `fitted` gives them), the prediction (stored, or made now),
  the comparison with the target run when it has finished, and the report."""
  root = Path(root)
  table = runs_table(root)
  df, fit3, fit2 = fitted or fit(root, table, settings, save=False)  # the demo's stored fits stay as they are
  prediction = read_prediction(root, set(fit3["runs"]))
  if prediction is None:  # a root of the user's own: predict at target_factor x its largest budget (not stored)
    from scaling.sweep import expand

    _, base = expand.load([str(root / root_lib.SWEEP_GIN)])
    budgets = sweep_runs(table)["budget"]
    prediction, _ = plan_target(fit3, fit2, recipe.target_budget(budgets, settings.target_factor), base)
  final = sweep_runs(table)
  final = final[final["run"].isin(set(fit3["runs"]))].dropna(subset=["loss"])
  target = target_runs(table, prediction).dropna(subset=["loss"])
  cmp = comparison(prediction, float(target["loss"].iloc[0])) if len(target) else None
  text = build_report(root, table, df, fit3, fit2, prediction, cmp, recipe.bracket_failures(final))
  return write_report(root, text, out), cmp


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="Re-run the demo's analysis (fits, prediction check, report) on a sweep root.")
  parser.add_argument("root", help="a sweep root written by `scaling demo`")
  parser.add_argument("--target_factor", type=float, default=10.0, help="target budget / largest swept budget")
  parser.add_argument("--bootstrap", type=int, default=200)
  parser.add_argument("--level", type=float, default=0.9)
  parser.add_argument("--out", default=None, help="where to write the report (default ROOT/report.html)")
  args = parser.parse_args(argv)
  try:
    try:
      settings = recipe.settings(target_factor=args.target_factor, bootstrap=args.bootstrap, level=args.level)
    except ValueError as e:
      raise UserError(str(e).replace("demo.", "--")) from None
    path, cmp = analyse(Path(args.root), settings, out=args.out)
  except UserError as e:
    print(f"analysis/demo.py: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {path}")
  if cmp is not None:
    print(error_line(cmp, args.level))
  return 0


if __name__ == "__main__":
  sys.exit(main())
