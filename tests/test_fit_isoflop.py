"""Tests of scaling.fit.isoflop (approach 2): Porian et al. exponents, our own IsoFLOP minima, errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.errors import UserError
from scaling.fit import isoflop, synthetic

DATA = Path(__file__).parent / "data"
# Porian et al. 2024, weighted fits of ln N* on ln C for RefinedWeb (shared/data/README.md, copied to tests/data).
TARGETS = {
    "rw/base/long/kaplan/kaplan/train": 0.835,
    "rw/base/long/kaplan/standard/val": 0.707,
    "rw/base/short/kaplan/standard/val": 0.602,
    "rw/base/short/chinchilla/standard/val": 0.572,
    "rw/tuned/short/const/standard/val": 0.497,
}


@pytest.mark.parametrize("config, target", TARGETS.items())
def test_weighted_exponent_from_porian_optimal_pairs(config, target):
  pairs = pd.read_csv(DATA / "porian2024_optimal_pairs.csv", comment="#")
  p = pairs[pairs["config"] == config].dropna()
  df = pd.DataFrame({"C": p["flops"], "N": p["n_star"], "D": p["t_star"], "loss": p["loss_star"],
                     "N_std": p["n_star_std_log"], "D_std": p["t_star_std_log"]})
  fit = isoflop.allocation(isoflop.given_minima(df), weighted=True)
  assert fit.weighted
  assert fit.a == pytest.approx(target, abs=0.001)


def _points(config):
  raw = pd.read_csv(DATA / "porian2024_isoflop_points.csv", comment="#")
  raw = raw[raw["config"] == config]
  return pd.DataFrame({"C": raw["flops"], "N": raw["n_params"], "D": raw["tokens"], "loss": raw["loss"]})


@pytest.mark.parametrize("config, target", TARGETS.items())
def test_our_isoflop_minima_from_porian_raw_points(config, target):
  """Spline minima (Porian's own per-budget model) land within 0.02; parabolas near the minimum within 0.035."""
  _, spline = isoflop.fit_once(_points(config), "spline", 0.01, True, False)
  assert spline.a == pytest.approx(target, abs=0.02)
  _, parabola = isoflop.fit_once(_points(config), "parabola", 0.01, True, False, k=2)
  assert parabola.a == pytest.approx(target, abs=0.035)


def test_minima_of_a_synthetic_sweep_follow_the_law():
  truth = synthetic.EPOCH
  df = synthetic.isoflop_sweep(budgets=(1e18, 1e19, 1e20, 1e21), sizes=15, span=1.2, noise=0.0)
  opt = isoflop.minima(df, "parabola", 0.05, k=3)
  assert opt["ok"].all() and len(opt) == 4
  fit = isoflop.allocation(opt, weighted=False)
  assert fit.a == pytest.approx(truth["beta"] / (truth["alpha"] + truth["beta"]), abs=0.01)
  assert fit.a + fit.b == pytest.approx(1.0, abs=0.01)


def test_grouping_and_edge_minima():
  ids = isoflop.group_budgets(np.array([1e18, 1.05e18, 2e18, 0.98e18, 4e18]), 0.1)
  assert list(ids) == [0, 0, 1, 0, 2]
  x = np.log(np.array([1.0, 2.0, 4.0, 8.0]))
  assert isoflop._vertex(x, np.array([4.0, 3.0, 2.5, 2.2]))[3] == "minimum outside the sampled sizes"
  assert isoflop.window(x, np.array([3.0, 2.0, 2.5, 3.0]), 1).tolist() == [True, True, True, False]


def test_a_single_budget_is_a_user_error():
  df = synthetic.isoflop_sweep(budgets=(1e19,), sizes=6)
  with pytest.raises(UserError, match="one budget"):
    isoflop.check_points(df, 0.1)
  with pytest.raises(UserError, match="2 or more compute budgets"):
    isoflop.allocation(isoflop.minima(df))


def _jittered(sd, seed, budgets=6e18 * 3.0 ** np.arange(9)):
  df = synthetic.isoflop_sweep(budgets=budgets, sizes=25, noise=0.01, seed=seed)
  df["C"] = df["C"] * np.exp(np.random.default_rng(seed).normal(0.0, sd, len(df)))
  return df


@pytest.mark.parametrize("seed", range(4))
def test_scattered_compute_clusters_into_its_real_budgets(seed):
  df = _jittered(0.1, seed)  # digitised or logged C: +-10% around 9 budgets, more than --budget_tol
  found = isoflop.budgets_found(df, 0.1)
  assert len(found) == 9 and all(r["points"] == 25 for r in found)
  assert found[0]["found_by"] == "clusters of ln C"
  np.testing.assert_allclose([r["C"] for r in found], 6e18 * 3.0 ** np.arange(9), rtol=0.1)


def test_exact_budgets_are_kept_as_they_are():
  porian = pd.read_csv(Path(__file__).parent / "data" / "porian2024_isoflop_points.csv", comment="#")
  for _, part in porian.groupby("config"):
    assert len(np.unique(isoflop.group_budgets(part["flops"].to_numpy(), 0.1))) == part["flops"].nunique()


def test_a_sweeps_planned_budget_groups_the_points():
  df = _jittered(0.3, 0, budgets=(1e18, 2e18, 4e18))  # too scattered to cluster; the plan says which budget
  df["budget"] = np.repeat([1e18, 2e18, 4e18], 25)
  found = isoflop.budgets_found(df, 0.1)
  assert [r["C"] for r in found] == [1e18, 2e18, 4e18] and found[0]["found_by"] == "sweep budget (run.json)"
  opt = isoflop.minima(df)
  assert opt["C"].tolist() == [1e18, 2e18, 4e18]
  mixed = df.copy()
  mixed.loc[mixed.index[:5], "budget"] = 0.0  # a root that also holds grid runs: they carry no budget
  with pytest.raises(UserError, match=r"5 of 75 points have no IsoFLOP budget .* --filter 'budget > 0'"):
    isoflop.check_points(mixed, 0.1)  # they used to be clustered by C with the rest, silently


def test_approach2_minima_on_scattered_compute_are_one_per_real_budget():
  opt = isoflop.minima(_jittered(0.1, 1))
  assert len(opt) == 9 and (opt["n_points"] == 25).all()
