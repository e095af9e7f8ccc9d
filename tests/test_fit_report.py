"""Tests of scaling.fit.report: one self-contained HTML page with every approach the data allows."""

import pandas as pd

from scaling.fit import isoflop, pipeline, report, synthetic


def test_report_has_all_sections_and_inline_images():
  curves = synthetic.learning_curves(sizes=(3e7, 1e8, 3e8), checkpoints=6, seed=1)
  sweep = synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes=5, noise=0.005, seed=1)
  sweep["run"] = "iso" + sweep["run"]
  df = pd.concat([curves, sweep], ignore_index=True)
  html = report.build(df, {"name": "synthetic"}, pipeline.Options(bootstrap=10), ["synthetic"], [1e22])
  for section in ("predictions", "approach 3: parametric fit", "approach 2: IsoFLOP minima",
                  "approach 1: loss envelope", "learning curves", "runs", "laws compared", "compute budgets",
                  "loss against compute", "counting convention"):
    assert section in html
  assert html.index("loss against compute") < html.index("<h2>predictions</h2>")  # the report opens with it
  final = df[df["final"]]
  assert f"{len(isoflop.budgets_found(final, 0.1))} budget(s) found among {len(final)} final points" in html
  assert "overtraining" in html and "Backtest" in html
  assert "<details>" not in html  # 18 runs: shown as they are
  assert html.count("data:image/png;base64,") >= 6
  assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
  assert "1e+22" in html


def test_long_tables_are_folded():
  rows = [{"run": f"r{i}", "loss": 3.0} for i in range(300)]
  folded = report._collapsed(rows, ["run", "loss"], "runs")
  assert folded.startswith("<details><summary>300 runs") and folded.count("<tr>") == 301
  assert "<details>" not in report._collapsed(rows[:5], ["run", "loss"], "runs")
