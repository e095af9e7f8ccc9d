"""Tests of choosing the curve law's lambda by backtest (`scaling fit --law=tissue --lambda_decay=auto`)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from scaling import runs
from scaling.errors import UserError
from scaling.fit import curve_backtest, curve_fit, curves, schedules
from scaling.fit.curves import Curve
from scaling.optim import OptimizerConfig

THETA = (1.2, 0.9, 0.45, 0.35)  # L0, A, alpha, C
LAM = 0.98
PEAK = 0.01


def _rates(steps: int) -> np.ndarray:
  """Our trainer's cosine schedule (5% warmup, final 0.1 x peak), per step."""
  return schedules.learning_rates(schedules.Schedule("cosine", steps, PEAK, int(round(0.05 * steps)), 0.1))


def _curve(steps: int, seen: float = 1.0, every: int = 20, noise: float = 0.0, seed: int = 0) -> Curve:
  """A cosine run of `steps` steps whose loss follows the law at lambda = LAM, observed up to `seen` of it."""
  grid, eta = np.arange(1, steps + 1), _rates(steps)
  at = np.arange(every, steps + 1, every)
  full = Curve(f"run{steps}", at, np.ones(len(at)), grid, eta, {"planned_steps": steps})
  loss = curves.predict(THETA, *curves.features(full, LAM))
  loss = loss * np.exp(noise * np.random.default_rng(seed).standard_normal(len(loss)))
  keep = at <= seen * steps
  return Curve(full.id, at[keep], loss[keep], grid[grid <= at[keep][-1]], eta[grid <= at[keep][-1]], full.meta)


def test_finished_and_partial_curves_are_told_apart_by_their_planned_steps():
  done, part = _curve(1000), _curve(3000, seen=0.3)
  assert curve_backtest.is_finished(done) and not curve_backtest.is_finished(part)
  assert curve_backtest.seen_fraction([done, part]) == pytest.approx(0.3)
  assert curve_backtest.seen_fraction([done, _curve(1500)]) == 0.0
  assert curve_backtest.cut(done, 0.3).steps[-1] == 300 and curve_backtest.cut(done, 0.01) is None


def test_backtest_recovers_the_lambda_that_made_the_curves_and_predicts_the_partial_run():
  data = [_curve(3000, seen=0.3), _curve(1000), _curve(1500)]
  lam, table = curve_backtest.choose_lambda(data, curve_fit.Options())
  assert lam == LAM and table["chosen"] == LAM and table["fraction"] == pytest.approx(0.3)
  assert table["held_out"] == ["run1000", "run1500"]
  by_lam = {r["lambda"]: r["mean_abs_error"] for r in table["rows"]}
  assert by_lam[LAM] < 1e-3 and by_lam[0.999] > 10 * by_lam[LAM]  # the wrong memory misses the held-out finals
  record = curve_fit.fit(data, dataclasses.replace(curve_fit.Options(), lam=lam))
  whole = _curve(3000)
  final = curves.predict(curve_fit.theta_of(record), *(a[-1:] for a in curves.features(whole, lam)))[0]
  assert final == pytest.approx(whole.loss[-1], rel=1e-3)


def test_final_error_fits_only_the_held_out_curves_first_fraction_and_scores_its_last_point(monkeypatch):
  held, other = _curve(1500), _curve(1000)
  off = Curve(held.id, held.steps, held.loss * np.where(held.steps == held.steps[-1], 1.05, 1.0), held.grid,
              held.eta, held.meta)  # only the final loss is 5% higher: the law, fitted exactly, misses it by -1/1.05
  fitted = []
  real = curves.minimise
  monkeypatch.setattr(curves, "minimise", lambda s1, s2, y, *a, **k: fitted.append(len(y)) or real(s1, s2, y, *a, **k))
  err = curve_backtest.final_error(off, [other], 0.3, dataclasses.replace(curve_fit.Options(), lam=LAM))
  assert err == pytest.approx(1 / 1.05 - 1, abs=1e-3)
  assert fitted == [len(other.steps) + int(np.sum(held.steps <= 450))]  # steps 20..440 of the held-out curve
  assert curve_backtest.final_error(off, [other], 0.0, dataclasses.replace(curve_fit.Options(), lam=LAM)) == \
      pytest.approx(1 / 1.05 - 1, abs=1e-3)
  assert fitted[-1] == len(other.steps)  # fraction 0: the held-out curve is left out whole


def test_cut_keeps_the_boundary_step_despite_rounding():
  c = _curve(1500, every=10)
  assert 0.58 * 1500 < 870 and curve_backtest.cut(c, 0.58).steps[-1] == 870


def test_tables_are_finished_curves_and_get_a_leave_one_out_backtest(tmp_path, capsys):
  from scaling.cli import main
  rows = [f"{c.id},{s},{c.eta[s - 1]},{v}" for c in (_curve(1000), _curve(1500), _curve(2000))
          for s, v in zip(c.steps, c.loss)]
  table = tmp_path / "curves.csv"
  table.write_text("run,step,lr,loss\n" + "\n".join(rows) + "\n")
  out = tmp_path / "fit.json"
  assert main(["fit", str(table), "--law=tissue", "--lambda_decay=auto", f"--out={out}"]) == 0
  text = capsys.readouterr().out
  assert "each of 3 finished curves left out and the others fitted" in text
  backtest = json.loads(out.read_text())["lambda_backtest"]
  assert backtest["fraction"] == 0 and backtest["chosen"] == LAM


def test_auto_is_refused_when_c_is_fixed():
  with pytest.raises(UserError, match="--fix C=0: lambda only enters through C"):
    curve_backtest.choose_lambda([_curve(3000, seen=0.3), _curve(1000), _curve(1500)],
                                 curve_fit.Options(fix={"C": 0.0}))


def test_table_text_marks_failed_folds_and_the_choice():
  table = {"held_out": ["a", "b"], "fraction": 0.3, "chosen": 0.99,
           "rows": [{"lambda": 0.9, "errors": {"a": None, "b": 0.01}, "mean_abs_error": None},
                    {"lambda": 0.99, "errors": {"a": -0.02, "b": 0.01}, "mean_abs_error": 0.015}]}
  text = curve_backtest.table_text(table)
  assert "a failed  b +1.00%  mean |error| -" in text
  assert "0.99   a -2.00%  b +1.00%  mean |error| 1.50%  <- chosen" in text


def test_backtest_survives_noise():
  data = [_curve(3000, seen=0.3, noise=0.003, seed=1), _curve(1000, noise=0.003, seed=2),
          _curve(1500, noise=0.003, seed=3)]
  lam, _ = curve_backtest.choose_lambda(data, curve_fit.Options())
  assert lam in (0.97, 0.98, 0.99)


def test_backtest_needs_two_finished_curves():
  with pytest.raises(UserError, match="1 of 2 are finished, it needs at least 2"):
    curve_backtest.choose_lambda([_curve(3000, seen=0.3), _curve(1000)], curve_fit.Options())


def _run_dir(path, steps: int, seen: float = 1.0):
  """A run directory of our trainer's layout holding the synthetic curve (run.json plans the schedule)."""
  c = _curve(steps, seen)
  path.mkdir()
  opt = OptimizerConfig()
  runs.write_run_info(path, {"run_id": c.id, "steps": steps, "optimizer": dataclasses.asdict(opt),
                             "train": {"learning_rate": PEAK}})
  runs.write_metrics(path, [{"step": int(s), "lr": float(c.eta[s - 1]), "eval_loss": float(v)}
                            for s, v in zip(c.steps, c.loss)])
  runs.set_status(path, "done" if seen >= 1 else "preempted", int(c.steps[-1]))
  return path


def test_cli_chooses_lambda_records_the_table_and_predicts_the_partial_run(tmp_path, capsys):
  from scaling.cli import main
  part = _run_dir(tmp_path / "part", 3000, seen=0.3)
  dirs = [part, _run_dir(tmp_path / "r1000", 1000), _run_dir(tmp_path / "r1500", 1500)]
  out = tmp_path / "fit.json"
  assert main(["fit", *map(str, dirs), "--law=tissue", "--lambda_decay=auto", f"--out={out}"]) == 0
  text = capsys.readouterr().out
  assert "lambda = 0.98 (chosen by backtest)" in text and "<- chosen" in text
  record = json.loads(out.read_text())
  assert record["params"]["lambda"] == LAM and record["lambda_backtest"]["chosen"] == LAM
  assert main(["predict", str(out), f"--partial={part}", "--json"]) == 0
  got = json.loads(capsys.readouterr().out)["final"]
  assert got["loss"] == pytest.approx(_curve(3000).loss[-1], rel=1e-3)
  html = tmp_path / "report.html"
  assert main(["report", "--curve_fit", str(out), f"--out={html}"]) == 0
  page = html.read_text()
  assert "lambda = 0.98 (chosen by backtest)" in page and "&lt;- chosen" in page
  record["lambda_backtest"]["rows"][0]["errors"] = "none"
  out.write_text(json.dumps(record))
  assert main(["report", "--curve_fit", str(out), f"--out={html}"]) == 2
  err = capsys.readouterr().err
  assert "lambda_backtest.rows need lambda, errors and mean_abs_error" in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_too_few_finished_runs_and_a_bad_lambda(tmp_path, capsys):
  from scaling.cli import main
  part = _run_dir(tmp_path / "part", 3000, seen=0.3)
  done = _run_dir(tmp_path / "r1000", 1000)
  assert main(["fit", str(part), str(done), "--law=tissue", "--lambda_decay=auto", f"--out={tmp_path / 'f.json'}"]) == 2
  err = capsys.readouterr().err
  assert "needs at least 2" in err and len(err.strip().splitlines()) == 1
  with pytest.raises(SystemExit) as e:
    main(["fit", str(done), "--law=tissue", "--lambda_decay=soon"])
  assert e.value.code == 2 and "expected a number in [0, 1) or auto" in capsys.readouterr().err


@pytest.mark.slow
def test_partial_run_of_our_trainer_with_lambda_by_backtest(tmp_path, capsys):
  """analysis/partial_run.py's smallest family through the real trainer: a nano model trained to 600 steps and
  to 200 and 300 (own cosine schedules), the 600-step run cut to its first 30%, then `fit --lambda_decay=auto`
  on the three and `predict --partial`. Measured: lambda 0.995, final eval loss +1.62% (on the tests' 8 simulated
  devices; analysis/partial_run.py on one device: +1.66%, and -1.96% at the paper's lambda 0.999)."""
  from curve_testlib import nano_run
  from scaling.cli import main
  dirs = {steps: nano_run(steps, tmp_path / f"nano_{steps}") for steps in (600, 200, 300)}
  observed = [r for r in runs.read_metrics(dirs[600]) if "eval_loss" in r][-1]["eval_loss"]
  runs.truncate_metrics(dirs[600], 180)
  runs.set_status(dirs[600], "preempted", 180)
  out = tmp_path / "fit.json"
  assert main(["fit", str(dirs[600]), str(dirs[200]), str(dirs[300]), "--law=tissue", "--lambda_decay=auto",
               f"--out={out}"]) == 0
  table = json.loads(out.read_text())["lambda_backtest"]
  assert table["fraction"] == pytest.approx(0.3) and len(table["held_out"]) == 2  # the 200- and 300-step runs
  capsys.readouterr()
  assert main(["predict", str(out), f"--partial={dirs[600]}", "--json"]) == 0
  predicted = json.loads(capsys.readouterr().out)["final"]["loss"]
  with capsys.disabled():
    print(f"\nlambda {table['chosen']}: final {predicted:.4f} vs observed {observed:.4f} "
          f"({predicted / observed - 1:+.2%})")
  assert predicted == pytest.approx(observed, rel=0.025)  # measured +1.62%; the 1% is not met (docs/fit.md)
