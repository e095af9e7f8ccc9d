"""Tests of scaling.fit.plots: every figure is written as PNG and SVG."""

import numpy as np
import pytest

from scaling.fit import pipeline, plots, synthetic

CONV = {"name": "synthetic"}


@pytest.fixture(scope="module")
def sweep():
  return synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes=6, noise=0.005, seed=2)


def _written(png):
  assert png.suffix == ".png" and png.stat().st_size > 5000
  assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")


def test_isoflop_and_allocation_figures(sweep, tmp_path):
  rec = pipeline.run(sweep, CONV, pipeline.Options(approach=2, bootstrap=10))
  _written(plots.isoflop_curves(sweep, rec["optima"], tmp_path / "iso"))
  _written(plots.compute_optimal(rec, tmp_path / "opt", target=1e22))


def test_parametric_figures(sweep, tmp_path):
  rec = pipeline.run(sweep, CONV, pipeline.Options())
  _written(plots.residuals(sweep, rec, tmp_path / "res"))
  _written(plots.loss_vs_compute(sweep, rec, tmp_path / "loss"))


def test_learning_curve_figures(tmp_path):
  df = synthetic.learning_curves(checkpoints=8)
  _written(plots.learning_curves(df, tmp_path / "curves"))
  rec = pipeline.run(df, CONV, pipeline.Options(approach=1))
  _written(plots.loss_vs_compute(df, rec, tmp_path / "env"))


def test_plot_ranges_follow_the_data_and_the_target():
  assert plots.compute_range([3e11, 1e12, 3e12], 2.8e14) == (3e11, 2.8e14)
  assert plots.compute_range([3e11, 3e12]) == (3e11, 3e12)
  assert plots.compute_range(None, 1e20) == (1e18, 1e20)


def test_curve_ranges_follow_the_measured_curves():
  steps = np.arange(0, 101)
  loss = np.r_[np.full(10, 100.0), np.linspace(3.0, 2.0, 91)]  # the first 10% of steps lie far above the rest
  assert plots.curve_loss_range([(steps, loss)]) == pytest.approx((1.95, 3.05))
  assert plots.curve_loss_range([(steps, loss)], skip=0.0) == pytest.approx((2.0 - 4.9, 100.0 + 4.9))
  assert plots.curve_step_range([steps, np.arange(1, 151)]) == pytest.approx((-3.0, 153.0))
  with pytest.raises(ValueError):
    plots.curve_loss_range([])


def test_curve_law_figure(tmp_path):
  from scaling.fit.curve_report import CurveView
  steps = np.arange(10, 1001, 10)
  grid = np.arange(1, 1501)
  mid = 2 + 5 / np.sqrt(grid)
  law = {"step": grid, "loss": mid, "loss_lo": mid - 0.01, "loss_hi": mid + 0.01}
  fitted = CurveView("a", "partial", steps, 2 + 5 / np.sqrt(steps), steps <= 700, 700, law)
  held_out = CurveView("b", "held out", steps, 2.1 + 5 / np.sqrt(steps), np.zeros(len(steps), bool), None, law)
  _written(plots.curve_law([fitted, held_out], tmp_path / "law", "curve law"))
