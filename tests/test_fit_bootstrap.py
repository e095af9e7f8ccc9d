"""Tests of scaling.fit.bootstrap: resampling by run, reproducibility, coverage on synthetic sweeps."""

import numpy as np
import pytest

from scaling.errors import UserError
from scaling.fit import bootstrap, laws, parametric, synthetic


def test_run_weights_resample_whole_runs():
  runs = ["a", "a", "b", "c", "c", "c"]
  W = bootstrap.run_weights(runs, 50, seed=1)
  assert W.shape == (50, 6)
  np.testing.assert_array_equal(W[:, 0], W[:, 1])  # both points of run a always move together
  np.testing.assert_array_equal(W[:, 3], W[:, 5])
  np.testing.assert_allclose(W[:, [0, 2, 3]].sum(axis=1), 3)  # 3 runs drawn per resample
  np.testing.assert_array_equal(W, bootstrap.run_weights(runs, 50, seed=1))
  with pytest.raises(UserError, match="at least 2 runs"):
    bootstrap.run_weights(["a", "a"], 5, 0)


def test_interval_is_a_percentile_interval():
  assert bootstrap.interval(np.arange(101.0), 0.9) == pytest.approx([5.0, 95.0])


@pytest.fixture(scope="module")
def sweep_fit():
  df = synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20, 1e21), sizes=7, noise=0.01, seed=5)
  return df, parametric.fit(df, laws.get("chinchilla"))


def test_parametric_bootstrap_is_reproducible_with_a_seed(sweep_fit):
  df, fit = sweep_fit
  one = bootstrap.parametric(df, fit, 40, seed=7)
  two = bootstrap.parametric(df, fit, 40, seed=7)
  other = bootstrap.parametric(df, fit, 40, seed=8)
  np.testing.assert_array_equal(one, two)
  assert not np.allclose(one, other)
  alpha = one[:, fit.law.theta.index("alpha")]
  lo, hi = bootstrap.interval(alpha, 0.95)
  assert lo < fit.params["alpha"] < hi


def test_intervals_cover_the_truth_at_about_their_nominal_rate():
  """60 synthetic sweeps drawn from a known law, each fitted and bootstrapped (80 resamples of runs).

  All sweeps and all resamples run as one batched fit each (`parametric.batch_fit`). The 90% intervals of
  alpha, beta and of an extrapolated loss must contain the truth in 80-99% of sweeps, the 50% intervals in
  35-65%: percentile intervals that are far too narrow or far too wide fail.
  """
  law, truth, K, B = laws.get("chinchilla"), synthetic.EPOCH, 60, 80
  rng = np.random.default_rng(0)
  sweeps = [synthetic.isoflop_sweep(sizes=7, noise=0.01, rng=rng) for _ in range(K)]
  cols = {c: np.stack([s[c].to_numpy() for s in sweeps]) for c in ("N", "D")}
  loss = np.stack([s["loss"].to_numpy() for s in sweeps])
  theta, converged = parametric.batch_fit(law, cols, loss, np.ones_like(loss), law.starts()[::30])
  assert converged.mean() > 0.9
  W = np.concatenate([bootstrap.run_weights(s["run"], B, seed=k) for k, s in enumerate(sweeps)])
  rep = lambda a: np.repeat(a, B, axis=0)
  boot, _ = parametric.batch_fit(law, {c: rep(v) for c, v in cols.items()}, rep(loss), W, rep(theta)[:, None, :])
  boot = boot.reshape(K, B, -1)
  N, D = 1e10, 2e11  # 10x beyond the largest budget of the sweeps
  pred = lambda t: np.exp(t[..., 2]) + np.exp(t[..., 0]) / N ** t[..., 3] + np.exp(t[..., 1]) / D ** t[..., 4]
  quantities = {"alpha": (boot[..., 3], truth["alpha"]), "beta": (boot[..., 4], truth["beta"]),
                "loss": (pred(boot), synthetic.chinchilla_loss(truth, N, D))}
  for name, (samples, true) in quantities.items():
    for level, lo_ok, hi_ok in ((0.9, 0.8, 0.99), (0.5, 0.35, 0.65)):
      lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=1)
      coverage = np.mean((lo <= true) & (true <= hi))
      assert lo_ok <= coverage <= hi_ok, (name, level, coverage)
