"""Tests of scaling.fit.report: one self-contained HTML page with every approach the data allows."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling import cli
from scaling.fit import curve_report, curves, isoflop, pipeline, report, schedules, synthetic


def test_report_has_all_sections_and_inline_images():
  curves = synthetic.learning_curves(sizes=(3e7, 1e8, 3e8), checkpoints=6, seed=1)
  sweep = synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes=5, noise=0.005, seed=1)
  sweep["run"] = "iso" + sweep["run"]
  df = pd.concat([curves, sweep], ignore_index=True)
  html = report.build(df, {"name": "synthetic"}, pipeline.Options(bootstrap=10), ["synthetic"], [1e22],
                      extra="<h2>learning-curve law tissue: fit.json</h2>")
  for section in ("predictions", "approach 3: parametric fit", "approach 2: IsoFLOP minima",
                  "approach 1: loss envelope", "learning curves", "runs", "laws compared", "compute budgets",
                  "loss against compute", "counting convention"):
    assert section in html
  assert html.index("approach 1: loss envelope") < html.index("learning-curve law tissue") < html.index("<h2>runs</h2>")
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


# --- learning-curve law fits (scaling fit --law=tissue) in the report ---------------------------------------

TRUTH = np.array([2.5, 0.8, 0.5, 0.3])  # L0, A, alpha, C


def _law_curve(name: str, steps: int, rng: np.random.Generator, every: int = 20) -> pd.DataFrame:
  """Loss every `every` steps of the law at TRUTH under a named schedule, with 0.1% log-normal noise."""
  eta = schedules.learning_rates(schedules.Schedule(name, steps, 3e-3, warmup_steps=50))
  at = np.arange(every, steps + 1, every)
  s1, s2 = curves.areas(eta)
  loss = curves.predict(TRUTH, s1[at - 1], s2[at - 1]) * np.exp(1e-3 * rng.standard_normal(len(at)))
  return pd.DataFrame({"run": name, "step": at, "lr": eta[at - 1], "loss": loss})


def _main(capsys, *argv) -> tuple[int, str, str]:
  code = cli.main([str(a) for a in argv])
  out = capsys.readouterr()
  return code, out.out, out.err


@pytest.fixture(scope="module")
def curve_fit_json(tmp_path_factory) -> Path:
  """A curve-law fit of two of three curves (cosine, wsd) to 70% of their steps; linear is held out by --filter."""
  rng = np.random.default_rng(3)
  table = tmp_path_factory.mktemp("curves") / "curves.csv"
  pd.concat([_law_curve(n, 2000, rng) for n in ("cosine", "wsd", "linear")]).to_csv(table, index=False)
  out = table.with_name("fit.json")
  assert cli.main(["fit", str(table), "--law=tissue", "--filter=run != 'linear'", "--curve_until=0.7",
                   "--bootstrap=20", f"--out={out}"]) == 0
  return out


def test_curve_law_fit_gets_a_section_with_parameters_protocol_and_figure(curve_fit_json, tmp_path, capsys):
  page = tmp_path / "report.html"
  code, text, _ = _main(capsys, "report", "--curve_fit", curve_fit_json, "--out", page)
  assert code == 0 and f"wrote {page}" in text
  html = page.read_text()
  fit = json.loads(curve_fit_json.read_text())
  assert f"<h2>learning-curve law tissue: {curve_fit_json}</h2>" in html and curves.FORMULA in html
  for name in curves.PARAMS:
    lo, hi = fit["intervals"][name]
    assert f"<td>{name}</td><td>{fit['params'][name]:.6g}</td><td>[{lo:.6g}, {hi:.6g}]</td>" in html
  assert "fitting protocol" in html and "resamples of curves" in html and "lambda = 0.999 (fixed), m_0 = 0" in html
  assert "140 points from 2 curve(s)" in html and "only 2 curves" in html  # the fit's own warning is shown
  assert html.count("data:image/png;base64,") == 1
  assert "<td>linear</td><td>held out</td>" in html and "<td>wsd</td><td>partial</td>" in html
  assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained


def test_curve_views_predict_the_partial_and_held_out_curves(curve_fit_json):
  fit = curve_report.read(curve_fit_json)
  views = {v.id: v for v in curve_report.views(fit)}
  assert {k: v.role for k, v in views.items()} == {"cosine": "partial", "wsd": "partial", "linear": "held out"}
  assert [int(views[k].fitted.sum()) for k in ("cosine", "wsd", "linear")] == [70, 70, 0]
  assert views["wsd"].fit_end == 1400 and views["linear"].fit_end is None
  for v in views.values():
    law = dict(zip(v.law["step"], v.law["loss"]))
    assert v.law["step"][-1] == 2000 and {v.fit_end or 2000, 2000} <= set(law)
    assert law[2000] == pytest.approx(v.loss[-1], rel=0.01)  # the unfitted end of every curve, within 1%
    assert np.all(v.law["loss_lo"] <= v.law["loss_hi"]) and v.law["loss_hi"][-1] - v.law["loss_lo"][-1] > 0
  row = curve_report.prediction_row(views["linear"])
  assert row["last unfitted step"] == 2000 and row["fitted to step"] == "none" and "interval at end" in row


def test_partial_run_directory_is_predicted_to_its_planned_end(tmp_path, capsys):
  from scaling.fit import curve_load
  info = {"run_id": "partial", "steps": 1000, "optimizer": {"schedule": "cosine"}, "train": {"learning_rate": 0.003}}
  grid, eta = curve_load.planned_schedule(info)
  s1, s2 = curves.areas(eta)
  run = tmp_path / "partial"
  run.mkdir()
  (run / "run.json").write_text(json.dumps(info))
  at = np.arange(10, 501, 10)
  loss = curves.predict(TRUTH, s1[at - 1], s2[at - 1])
  records = [{"step": int(s), "lr": float(eta[s - 1]), "eval_loss": float(y)} for s, y in zip(at, loss)]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  out = tmp_path / "fit.json"
  assert _main(capsys, "fit", run, "--law=tissue", "--bootstrap=10", f"--out={out}")[0] == 0
  (v,) = curve_report.views(curve_report.read(out))
  assert v.role == "partial" and v.fit_end == 500 and v.law["step"][-1] == 1000 and v.fitted.all()
  truth_end = curves.predict(TRUTH, s1[-1:], s2[-1:])[0]
  assert v.law["loss"][-1] == pytest.approx(truth_end, rel=0.01)
  code, _, err = _main(capsys, "report", "--curve_fit", out, "--out", tmp_path / "r.html")
  assert code == 0, err
  assert "resamples of residual blocks" in (tmp_path / "r.html").read_text()


def test_curve_fit_whose_data_moved_is_reported_without_its_figure(curve_fit_json, tmp_path, capsys):
  moved = tmp_path / "fit.json"
  moved.write_text(json.dumps(_record(curve_fit_json, {"curves": [
      {**c, "source": str(tmp_path / "gone.csv")} for c in json.loads(curve_fit_json.read_text())["curves"]]})))
  code, _, err = _main(capsys, "report", "--curve_fit", moved, "--out", tmp_path / "r.html")
  html = (tmp_path / "r.html").read_text()
  assert code == 0 and "warning:" in err and "gone.csv: no such file" in err
  assert "data:image/png" not in html and "figure left out" in html and "<td>alpha</td>" in html


def _record(curve_fit_json: Path, change: dict) -> dict:
  fit = json.loads(curve_fit_json.read_text())
  for key, value in change.items():
    head, _, tail = key.partition(".")
    if tail:
      fit[head][tail] = value
    elif value is None:
      del fit[head]
    else:
      fit[head] = value
  return fit


@pytest.mark.parametrize("change, message", [
    ({"law": "chinchilla"}, "law 'chinchilla' is not a learning-curve law"),
    ({"params.alpha": "__import__('os')"}, "malformed curve-law fit record: params.alpha is not a number"),
    ({"curves": None}, "malformed curve-law fit record: curves is not a list"),
    ({"curves": [{"id": "cosine"}]}, "curves[0] needs an id and a source"),
    ({"intervals.alpha": [0.4]}, "intervals.alpha is not [low, high]"),
    ({"bootstrap.samples": [[1.0, 2.0]]}, "bootstrap.samples is not a list of (L0, A, alpha, C)"),
    ({"areas.momentum_init": "one"}, "areas.momentum_init is not zero or first_lr"),
])
def test_bad_curve_fit_record_exits_2_with_one_line(curve_fit_json, tmp_path, capsys, change, message):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps(_record(curve_fit_json, change)))
  code, _, err = _main(capsys, "report", "--curve_fit", bad, "--out", tmp_path / "r.html")
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and lines[0].startswith(f"scaling report: error: {bad}: "), err
  assert message in lines[0] and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("args, message", [
    (["--curve_fit", "{dir}/nothing.json"], "cannot read fit JSON"),
    (["--curve_fit", "{dir}/list.json"], "not a fit record"),
    ([], "nothing to report: give INPUT"),
    (["{dir}/list.json", "--law=tissue"], "--law=tissue: the report shows a learning-curve law from its fit"),
])
def test_report_arguments_that_cannot_work_exit_2(tmp_path, capsys, args, message):
  (tmp_path / "list.json").write_text("[1, 2]")
  code, _, err = _main(capsys, "report", *[a.format(dir=tmp_path) for a in args], "--out", tmp_path / "r.html")
  assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
