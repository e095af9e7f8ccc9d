"""Tests of scaling.fit.synthetic: the designs and noise of the synthetic sweeps."""

import numpy as np

from scaling.fit import synthetic


def test_isoflop_sweep_design_and_noise_free_losses():
  df = synthetic.isoflop_sweep(budgets=(1e18, 1e19), sizes=5, noise=0.0)
  assert len(df) == 10 and df["run"].is_unique and df["final"].all()
  np.testing.assert_allclose(6 * df["N"] * df["D"], df["C"], rtol=1e-12)
  np.testing.assert_allclose(df["loss"], synthetic.chinchilla_loss(synthetic.EPOCH, df["N"], df["D"]))


def test_learning_curves_have_checkpoints_and_one_final_point_per_run():
  df = synthetic.learning_curves(sizes=(1e7, 1e8), checkpoints=4, noise=0.0)
  assert len(df) == 8 and df.groupby("run")["final"].sum().eq(1).all()
  assert (df.groupby("run")["loss"].apply(lambda s: s.is_monotonic_decreasing)).all()
