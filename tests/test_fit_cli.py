"""Tests of scaling.fit.cli through `python -m scaling`: fit, predict, and one-line errors with exit 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scaling.fit import synthetic

ROOT = Path(__file__).resolve().parents[1]


def scaling(*args, cwd=None):
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  return subprocess.run([sys.executable, "-m", "scaling", *map(str, args)], capture_output=True, text=True,
                        env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def sweep_csv(tmp_path_factory):
  path = tmp_path_factory.mktemp("cli") / "sweep.csv"
  df = synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes=6, noise=0.005, seed=9)
  df.rename(columns={"N": "params", "D": "tokens", "loss": "val_loss"})[["params", "tokens", "val_loss", "run"]].to_csv(
      path, index=False)
  return path


def test_fit_then_predict(sweep_csv, tmp_path):
  out = tmp_path / "fit.json"
  r = scaling("fit", sweep_csv, "--columns", "N=params,D=tokens,loss=val_loss", "--bootstrap", "20",
              "--out", out, "--target", "1e22")
  assert r.returncode == 0, r.stderr
  fit = json.loads(out.read_text())
  for key in ("law", "approach", "params", "intervals", "objective", "n_points", "starts_converged", "convention"):
    assert key in fit
  assert fit["law"] == "chinchilla" and fit["approach"] == 3 and fit["n_points"] == 18
  assert set(fit["params"]) == {"E", "A", "B", "alpha", "beta"}
  assert fit["convention"]["N"] == "column params" and fit["convention"]["C"] == "6 * N * D (computed)"
  assert "alpha =" in r.stdout and "of 4500 starts converged" in r.stdout
  p = scaling("predict", out, "--N", "1e9", "--D", "2e10")
  assert p.returncode == 0, p.stderr
  assert p.stdout.startswith("loss = ") and "95% interval" in p.stdout
  c = scaling("predict", out, "--compute", "1e22", "--json")
  opt = json.loads(c.stdout)["optimum"]
  assert 6 * opt["N"]["value"] * opt["D"]["value"] == pytest.approx(1e22, rel=1e-6)
  assert opt["N"]["interval"][0] < opt["N"]["value"] < opt["N"]["interval"][1]


def _bad_table(tmp_path, **cols):
  path = tmp_path / "bad.csv"
  pd.DataFrame(cols).to_csv(path, index=False)
  return path


@pytest.mark.parametrize("case, args, message", [
    ("missing column", {"N": [1e8, 2e8], "loss": [3.0, 2.9]}, "needs column 'D'; it has N, loss (map"),
    ("non-positive N", {"N": [1e8, -5.0] * 3, "D": [1e9] * 6, "loss": [3.0] * 6},
     "column 'N' is not positive at row 3 (value -5.0)"),
    ("NaN loss", {"N": [1e8] * 6, "D": [1e9] * 6, "loss": [3.0, None, 3, 3, 3, 3]}, "column 'loss' is NaN"),
    ("too few points", {"N": [1e8, 2e8, 3e8], "D": [1e9] * 3, "loss": [3.0, 2.9, 2.8]}, "3 point(s) but 5 free"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, case, args, message):
  path = _bad_table(tmp_path, **args)
  r = scaling("fit", path, "--out", tmp_path / "f.json")
  assert r.returncode == 2, (case, r.stderr)
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0] and lines[0].startswith("scaling fit: error:")
  if case != "too few points":
    assert lines[0].startswith(f"scaling fit: error: {path}: ")


def test_single_budget_for_approach_2_exits_2(tmp_path):
  df = synthetic.isoflop_sweep(budgets=(1e19,), sizes=5)
  path = tmp_path / "one.csv"
  df[["N", "D", "C", "loss"]].to_csv(path, index=False)
  r = scaling("fit", path, "--approach", "2")
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
  assert "one budget" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--law", "nope"], "unknown law"), (["--columns", "N"], "not NAME=column"), (["--holdout", "C>>1"], "use largest"),
    (["--fix", "alpha"], "NAME=NUMBER"), (["--approach", "7"], "--approach=7"),
])
def test_bad_options_exit_2(sweep_csv, tmp_path, args, message):
  r = scaling("fit", sweep_csv, "--columns", "N=params,D=tokens,loss=val_loss", "--out", tmp_path / "f.json", *args)
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and message in r.stderr


def test_predict_errors_exit_2(tmp_path):
  r = scaling("predict", tmp_path / "missing.json", "--N", "1e9", "--D", "1e10")
  assert r.returncode == 2 and "cannot read fit JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_importing_the_cli_loads_neither_jax_nor_matplotlib():
  code = "import sys, scaling.fit.cli; print('jax' in sys.modules, 'matplotlib' in sys.modules)"
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert r.stdout.split() == ["False", "False"]


def test_out_parent_is_created_and_an_unwritable_out_fails_before_fitting(sweep_csv, tmp_path):
  out = tmp_path / "new" / "dir" / "fit.json"
  r = scaling("fit", sweep_csv, "--columns", "N=params,D=tokens,loss=val_loss", "--out", out)
  assert r.returncode == 0, r.stderr
  assert json.loads(out.read_text())["law"] == "chinchilla"
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  r = scaling("report", sweep_csv, "--columns", "N=params,D=tokens,loss=val_loss", "--out", blocker / "report.html")
  assert r.returncode == 2 and "--out" in r.stderr and "Traceback" not in r.stderr


def test_report_of_a_bad_curve_fit_record_exits_2_with_one_line(tmp_path):
  bad = tmp_path / "fit.json"
  bad.write_text(json.dumps({"law": "tissue", "params": {"L0": 2.5, "A": 0.8, "alpha": 0.5, "C": 0.3, "lambda": 0.999},
                             "areas": {"momentum_init": "zero"}}))
  r = scaling("report", "--curve_fit", bad, "--out", tmp_path / "report.html")
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
  assert lines[0] == f"scaling report: error: {bad}: malformed curve-law fit record: objective is not a number"
  assert not (tmp_path / "report.html").exists()


def _main(capsys, *args):
  from scaling import cli
  code = cli.main([str(a) for a in args])
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize("args, message", [
    (["--delta", "0"], "--delta=0.0: must be > 0"), (["--bootstrap", "-3"], "--bootstrap=-3: must be >= 0"),
    (["--level", "1.5"], "--level=1.5"), (["--window", "-1"], "--window=-1"), (["--budget_tol", "0"], "--budget_tol=0.0"),
    (["--seed", "-1"], "--seed=-1"), (["--target", "-5"], "--target=-5.0"),
])
def test_options_out_of_range_exit_2_with_one_line(capsys, sweep_csv, tmp_path, args, message):
  code, _, err = _main(capsys, "fit", sweep_csv, "--out", tmp_path / "f.json", *args)
  assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_a_fit_json_naming_a_law_file_never_runs_it(capsys, tmp_path):
  marker = tmp_path / "ran"
  law_file = tmp_path / "evil_law.py"
  law_file.write_text(
      f"from pathlib import Path\nPath({str(marker)!r}).write_text('side effect')\n"
      "from scaling.fit.laws import law\n"
      "@law('evil_power', inputs=('N',), grid={'E': [1.0], 'A': [10.0], 'alpha': [0.3]})\n"
      "def evil_power(xp, N, E, A, alpha):\n  return E + A * N ** -alpha\n")
  fit_json = tmp_path / "fit.json"
  fit_json.write_text(json.dumps({"law": "evil_power", "approach": 3, "params": {}, "law_source": f"file:{law_file}",
                                  "theta": {"E": 1.5, "A": 20.0, "alpha": 0.3}}))
  code, _, err = _main(capsys, "predict", fit_json, "--N", "1e9")
  assert code == 2 and len(err.strip().splitlines()) == 1 and "--law_file" in err and "never runs code" in err
  assert not marker.exists()
  code, out, err = _main(capsys, "predict", fit_json, "--N", "1e9", "--law_file", law_file)
  assert code == 0, err
  assert out.startswith("loss = ") and marker.exists()  # named explicitly: the user chose to run it


def test_fitting_repeated_data_with_a_fresh_data_law_warns_once(capsys, tmp_path):
  df = synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes=5, noise=0.005, seed=4)
  df["epochs"] = [1.0] * (len(df) - 3) + [4.0] * 3
  path = tmp_path / "repeated.csv"
  df[["N", "D", "loss", "epochs"]].to_csv(path, index=False)
  code, _, err = _main(capsys, "fit", path, "--law", "power_N", "--out", tmp_path / "f.json")
  assert code == 0
  warnings = [line for line in err.splitlines() if "warning" in line]
  assert len(warnings) == 1 and "3 of 15 point(s)" in warnings[0] and "muennighoff" in warnings[0]
  df["epochs"] = 1.0
  df[["N", "D", "loss", "epochs"]].to_csv(path, index=False)
  _, _, err = _main(capsys, "fit", path, "--law", "power_N", "--out", tmp_path / "f.json")
  assert "warning" not in err


def test_bad_tables_for_new_laws_exit_2(capsys, tmp_path):
  path = _bad_table(tmp_path, N=[1e8], D=[1e9], loss=[3.0])
  code, _, err = _main(capsys, "fit", path, "--law", "overtraining", "--out", tmp_path / "f.json")
  assert code == 2 and len(err.strip().splitlines()) == 1 and "1 point(s) but 4 free" in err
  path = _bad_table(tmp_path, N=[1e8, 2e8], loss=[3.0, 2.9])
  code, _, err = _main(capsys, "fit", path, "--law", "auto", "--holdout", "N>1.5e8", "--out", tmp_path / "f.json")
  assert code == 2 and len(err.strip().splitlines()) == 1 and "no candidate law" in err
