"""The learning-curve law of Tissue et al. 2024: areas, schedules, published fits, cross-schedule prediction,
synthetic recovery, bad input, and a partial run of our own trainer."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling import cli, runs
from scaling.fit import curve_fit, curve_load, curves, schedules

DATA = Path(__file__).parent / "data" / "tissue_luo_100M_lr_schedules.csv"
# Published single-schedule fits (L0, A, alpha, C), shared/data/README.md.
PUBLISHED = {"cosine": (2.738, 0.01977, 0.8872, 0.3995), "wsd": (2.814, 0.01228, 0.9619, 0.4781),
             "811": (2.830, 0.01177, 0.9681, 0.5499)}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
  return pd.read_csv(DATA, comment="#", dtype={"run": str})


def _write(df: pd.DataFrame, path: Path) -> Path:
  df.to_csv(path, index=False)
  return path


def test_areas_by_hand():
  s1, s2 = curves.areas(np.array([1.0, 1.0, 0.5, 0.5]), lam=0.5)
  np.testing.assert_allclose(s1, [1, 2, 2.5, 3])
  np.testing.assert_allclose(s2, [0, 0, 0.5, 0.75])  # m = 0, 0, 0.5, 0.25


def test_warmup_rise_counts_in_s1_not_s2():
  s1, s2 = curves.areas(np.array([0.0, 0.5, 1.0, 1.0, 0.5]), lam=0.9)
  np.testing.assert_allclose(s1, [0, 0.5, 1.5, 2.5, 3.0])
  np.testing.assert_allclose(s2, [0, 0, 0, 0, 0.5])


def test_momentum_init_first_lr():
  _, s2 = curves.areas(np.array([2.0, 2.0, 2.0]), lam=0.5, momentum_init=2.0)
  np.testing.assert_allclose(s2, [2, 3, 3.5])


def test_schedules_match_the_trainer():
  jnp = pytest.importorskip("jax.numpy")
  from scaling.optim import OptimizerConfig, learning_rate_schedule
  for name in ("cosine", "wsd", "multistep", "constant"):
    for warmup, milestones in ((0.0, None), (0.05, None), (0.05, (0.3, 0.6, 0.9))):
      cfg = OptimizerConfig(schedule=name, warmup_fraction=warmup, milestones=milestones)
      for steps in (997, 1000):
        ours = schedules.learning_rates(schedules.Schedule(name, steps, 0.01, int(round(warmup * steps)),
                                                           cfg.final_lr_fraction, cfg.cooldown_fraction,
                                                           milestones=milestones or (0.8, 0.9)))
        theirs = np.asarray(learning_rate_schedule(cfg, 0.01, steps)(jnp.arange(steps)), np.float64)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-12)  # the trainer computes in float32


def test_multistep_811_matches_the_published_schedule(table):
  g = table[table.run == "811"]
  eta = schedules.learning_rates(schedules.Schedule("multistep", int(g.step.iloc[-1]) + 1, 1e-3))
  np.testing.assert_allclose(eta[g.step.to_numpy()], g.lr.to_numpy(), rtol=1e-4)


@pytest.mark.parametrize("run", ["cosine", "wsd", "811"])
def test_reproduces_published_single_schedule_fits(run, table, tmp_path):
  """The published figures come from a protocol with one record per 100 steps as the law's step and m_0 = eta_0."""
  g = table[table.run == run].iloc[::10]
  coarse = _write(pd.DataFrame({"step": np.arange(len(g)), "lr": g.lr.to_numpy(), "loss": g.loss.to_numpy()}),
                  tmp_path / f"{run}.csv")
  fit = curve_fit.fit(curve_load.from_table(coarse), curve_fit.Options(momentum_init="first_lr"))
  L0, A, alpha, C = PUBLISHED[run]
  p = fit["params"]
  print(f"{run}: L0 {p['L0']:.4f} A {p['A']:.5f} alpha {p['alpha']:.4f} C {p['C']:.4f} (published {PUBLISHED[run]})")
  assert p["L0"] == pytest.approx(L0, rel=0.01)
  for name, want in (("A", A), ("alpha", alpha), ("C", C)):
    assert p[name] == pytest.approx(want, rel=0.05)


def _errors(theta, curve, skip=0.1):
  s1, s2 = curves.features(curve)
  keep = curve.steps >= skip * curve.steps[-1]
  rel = np.abs(curves.predict(theta, s1[keep], s2[keep]) / curve.loss[keep] - 1)
  final = curves.predict(theta, s1[-1:], s2[-1:])[0] / curve.loss[-1] - 1
  return rel.mean(), rel.max(), final


def test_fitted_on_cosine_predicts_wsd_and_811(table, tmp_path):
  every_step = {c.id: c for c in curve_load.from_table(_write(table, tmp_path / "all.csv"))}
  fit = curve_fit.fit([every_step["cosine"]], curve_fit.Options())
  theta = curve_fit.theta_of(fit)
  for run in ("wsd", "811"):
    mean, worst, final = _errors(theta, every_step[run])
    print(f"cosine -> {run}: mean |rel err| {mean:.4f}, worst {worst:.4f}, final {final:+.4f} (after the first 10% of steps)")
    assert mean < 0.02 and worst < 0.07 and abs(final) < 0.01


def _synthetic(theta, sched, rng, noise=1e-3, every=10):
  eta = schedules.learning_rates(sched)
  grid = np.arange(1, sched.steps + 1)
  steps = grid[every - 1::every]
  s1, s2 = curves.areas(eta)
  idx = steps - 1
  loss = curves.predict(theta, s1[idx], s2[idx]) * np.exp(noise * rng.standard_normal(len(steps)))
  return pd.DataFrame({"step": steps, "lr": eta[idx], "loss": loss})


def test_recovers_known_parameters_from_one_curve(rng, tmp_path):
  truth = np.array([2.5, 0.8, 0.5, 0.3])
  df = _synthetic(truth, schedules.Schedule("cosine", 5000, 3e-3, warmup_steps=100), rng)
  fit = curve_fit.fit(curve_load.from_table(_write(df, tmp_path / "syn.csv")), curve_fit.Options(bootstrap=30))
  got = curve_fit.theta_of(fit)
  np.testing.assert_allclose(got, truth, rtol=0.05)
  assert fit["bootstrap"]["unit"] == "residual_block" and fit["bootstrap"]["block_len"] >= 1
  for name, value in zip(curves.PARAMS, truth):
    lo, hi = fit["intervals"][name]
    assert lo <= got[curves.PARAMS.index(name)] <= hi


def test_several_curves_bootstrap_by_curve(rng, tmp_path):
  truth = np.array([2.5, 0.8, 0.5, 0.3])
  parts = [_synthetic(truth, schedules.Schedule(name, 3000, 3e-3, warmup_steps=50), rng).assign(run=name)
           for name in ("cosine", "wsd", "linear")]
  fit = curve_fit.fit(curve_load.from_table(_write(pd.concat(parts), tmp_path / "three.csv")),
                      curve_fit.Options(bootstrap=20))
  assert fit["n_curves"] == 3 and fit["bootstrap"]["unit"] == "curve"
  np.testing.assert_allclose(curve_fit.theta_of(fit), truth, rtol=0.05)


def _main(capsys, *argv):
  code = cli.main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


def test_cli_fit_and_predict(table, tmp_path, capsys):
  src = _write(table[table.run == "cosine"][["step", "lr", "loss"]], tmp_path / "cosine.csv")
  out = tmp_path / "fit.json"
  code, text, _ = _main(capsys, "fit", str(src), "--law=lr_annealing", f"--out={out}", "--bootstrap=10")
  assert code == 0 and "law tissue" in text
  fit = json.loads(out.read_text())
  assert {"law", "params", "intervals", "objective", "n_points", "curves"} <= set(fit)
  assert set(fit["params"]) == {"L0", "A", "alpha", "C", "lambda"} and fit["bootstrap"]["unit"] == "residual_block"
  code, text, err = _main(capsys, "predict", str(out), "--schedule=wsd", "--steps=33908", "--peak_lr=1e-3",
                          "--cooldown_shape=exponential")
  assert code == 0 and text.startswith("step,lr,S1,S2,loss,loss_lo,loss_hi\n")
  assert "final loss at step 33908" in err
  rows = pd.read_csv(io.StringIO(text))
  assert rows.step.iloc[-1] == 33908 and np.all(np.diff(rows.S1) > 0)
  final = float(rows.loss.iloc[-1])
  wsd_truth = float(table[table.run == "wsd"].loss.tail(50).mean())
  assert final == pytest.approx(wsd_truth, rel=0.01)
  sched = _write(table[table.run == "811"][["step", "lr"]], tmp_path / "sched.csv")
  curve_csv = tmp_path / "curve.csv"
  code, text, _ = _main(capsys, "predict", str(out), f"--schedule_csv={sched}", f"--out={curve_csv}")
  assert code == 0 and "final loss at step 33907" in text and pd.read_csv(curve_csv).shape[0] > 100


@pytest.mark.parametrize("rows,flags,message", [
    ({"step": [1, 2, 3], "loss": [3.0, 2.9, 2.8]}, [], "missing column 'lr'"),
    ({"step": [1, 3, 2] * 4, "lr": [1e-3] * 12, "loss": [3.0] * 12}, [], "steps must increase"),
    ({"step": list(range(1, 21)), "lr": [1e-3] * 20, "loss": list(np.linspace(3, 2, 20))}, [], "never decreases"),
    ({"step": [1, 2, 3, 4], "lr": [1e-3, 9e-4, 8e-4, 7e-4], "loss": [3.0, 2.9, 2.8, 2.7]}, [], "at least 8"),
    ({"step": [1, 2], "lr": ["a", 1e-3], "loss": [3.0, 2.9]}, [], "not a finite number"),
    ({"step": list(range(1, 21)), "lr": list(np.linspace(1e-3, 1e-4, 20)), "loss": list(np.linspace(3, 2, 20))},
     ["--fix=beta=1"], "parameters are L0, A, alpha, C"),
    ({"step": list(range(1, 21)), "lr": list(np.linspace(1e-3, 1e-4, 20)), "loss": list(np.linspace(3, 2, 20))},
     ["--holdout=largest"], "--holdout does not apply to --law=tissue"),
])
def test_bad_tables_exit_2_with_one_line(rows, flags, message, tmp_path, capsys):
  src = _write(pd.DataFrame(rows), tmp_path / "bad.csv")
  code, _, err = _main(capsys, "fit", str(src), "--law=tissue", f"--out={tmp_path / 'f.json'}", *flags)
  assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_predict_needs_a_schedule_and_reads_fit_json_as_data(tmp_path, capsys):
  fit = tmp_path / "fit.json"
  fit.write_text(json.dumps({"law": "tissue", "params": {"L0": 2, "A": 1, "alpha": 0.5, "C": 0.1, "lambda": 0.999},
                             "areas": {"momentum_init": "zero"}}))
  code, _, err = _main(capsys, "predict", str(fit))
  assert code == 2 and "--schedule NAME" in err
  code, _, err = _main(capsys, "predict", str(fit), "--schedule=cosine", "--peak_lr=1e-3")
  assert code == 2 and "needs --steps" in err
  code, text, _ = _main(capsys, "predict", str(fit), "--schedule=811", "--steps=1000", "--peak_lr=1e-3", "--json")
  assert code == 0 and json.loads(text)["final"]["step"] == 1000
  fit.write_text(json.dumps({"law": "tissue", "params": {"L0": "__import__('os')"}, "areas": {}}))
  code, _, err = _main(capsys, "predict", str(fit), "--schedule=cosine", "--steps=10", "--peak_lr=1")
  assert code == 2 and "lacks params.L0" in err


@pytest.mark.slow
def test_partial_run_of_our_trainer(tmp_path, capsys):
  """600 steps of a nano model (cosine, 5% warmup; curve_testlib's run, shared with the backtest's test): fit the
  first 30% of eval losses, predict the final one.

  The law fitted on the whole curve gives the final loss within 3% (-2.0% measured; the issue asks for 1%, which
  is not met). From the first 30% the point prediction is not reliable either (-41% measured): by step 180 S2 is
  ~3% of its final value, so C (and with it the final loss) is not identified; the test asserts that reason, not
  a prediction.
  """
  from curve_testlib import nano_run
  run = nano_run(600, tmp_path / "run")
  final = [r for r in runs.read_metrics(run) if "eval_loss" in r][-1]
  assert final["step"] == 600
  curve = curve_load.from_run_dir(run)
  assert curve.meta["lr_source"] == "schedule"

  full = tmp_path / "full.json"
  assert _main(capsys, "fit", str(run), "--law=tissue", f"--out={full}")[0] == 0
  s1, s2 = curves.features(curve)
  whole = curves.predict(curve_fit.theta_of(json.loads(full.read_text())), s1[-1:], s2[-1:])[0]
  with capsys.disabled():
    print(f"\nfitted on the whole curve: final {whole:.4f} vs observed {final['eval_loss']:.4f}")
  assert whole == pytest.approx(final["eval_loss"], rel=0.03)  # measured: -2.0% (the 1% is not met here)

  partial = tmp_path / "partial"
  partial.mkdir()
  for name in ("run.json", "config.gin", "metrics.jsonl", "status.json"):
    shutil.copy2(run / name, partial / name)
  runs.truncate_metrics(partial, 180)
  runs.set_status(partial, "preempted", 180)
  fit = tmp_path / "fit.json"
  assert _main(capsys, "fit", str(partial), "--law=tissue", f"--out={fit}", "--bootstrap=100")[0] == 0
  code, text, _ = _main(capsys, "predict", str(fit), f"--partial={partial}", "--json")
  assert code == 0
  got = json.loads(text)["final"]
  rel = got["loss"] / final["eval_loss"] - 1
  record = json.loads(fit.read_text())
  with capsys.disabled():
    print(f"fitted on steps <= 180: final {got['loss']:.4f} [{got['loss_lo']:.4f}, {got['loss_hi']:.4f}] vs observed "
          f"{final['eval_loss']:.4f} ({rel:+.2%}); C interval {record['intervals']['C']}; "
          f"S2 at step 180 / final {s2[np.searchsorted(curve.steps, 180)] / s2[-1]:.3f}")
  assert got["step"] == 600 and np.isfinite(got["loss"]) and got["loss_lo"] <= got["loss"] <= got["loss_hi"]
  # Why the 1% from the first 30% is not met: by then almost none of the annealing area exists, so the
  # law's C (and with it the final loss) is not identified from these points.
  assert s2[np.searchsorted(curve.steps, 180)] / s2[-1] < 0.1


def test_partial_table_needs_and_uses_its_planned_schedule(table, tmp_path, capsys):
  wsd = table[table.run == "wsd"][["step", "lr", "loss"]]
  part = _write(wsd[wsd.step <= 0.7 * wsd.step.iloc[-1]], tmp_path / "wsd_partial.csv")
  fit = tmp_path / "fit.json"
  code, _, err = _main(capsys, "fit", str(part), "--law=tissue", f"--out={fit}")
  assert code == 2 and "never decreases" in err  # 70% of a WSD run is all at the peak LR: no annealing to fit C
  both = _write(pd.concat([table[table.run == "cosine"], wsd.assign(run="wsd").iloc[: len(wsd) * 7 // 10]]),
                tmp_path / "cosine_and_partial_wsd.csv")
  assert _main(capsys, "fit", str(both), "--law=tissue", f"--out={fit}")[0] == 0
  code, _, err = _main(capsys, "predict", str(fit), f"--partial={part}")
  assert code == 2 and "planned schedule" in err
  (tmp_path / "not_a_run").mkdir()
  code, _, err = _main(capsys, "predict", str(fit), f"--partial={tmp_path / 'not_a_run'}")
  assert code == 2 and "no run.json" in err and len(err.strip().splitlines()) == 1
  code, text, _ = _main(capsys, "predict", str(fit), f"--partial={part}", "--schedule=wsd", "--steps=33908",
                        "--peak_lr=1e-3", "--cooldown_shape=exponential")
  assert code == 0 and "observed loss" in text and "of 33908 planned" in text
  predicted = float(text.split("final loss at step 33908 = ")[1].split()[0])
  assert predicted == pytest.approx(float(wsd.loss.iloc[-1]), rel=0.01)


def test_a_fit_records_its_sources_as_absolute_paths(table, tmp_path, monkeypatch, capsys):
  """The report reads the curves again from the sources a fit.json names, from whatever directory it runs in."""
  _write(table[table.run == "cosine"], tmp_path / "cosine.csv")
  monkeypatch.chdir(tmp_path)
  assert _main(capsys, "fit", "cosine.csv", "--law=tissue", "--out=fit.json")[0] == 0
  sources = {c["source"] for c in json.loads((tmp_path / "fit.json").read_text())["curves"]}
  assert all(Path(s).is_absolute() for s in sources)
  assert {Path(s).resolve() for s in sources} == {(tmp_path / "cosine.csv").resolve()}
