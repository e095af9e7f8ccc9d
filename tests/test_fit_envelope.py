"""Tests of scaling.fit.envelope (approach 1): the lower envelope of learning curves and its power laws."""

import numpy as np
import pytest

from scaling.errors import UserError
from scaling.fit import envelope, synthetic


def test_envelope_is_the_lowest_curve_and_moves_to_larger_models():
  df = synthetic.learning_curves(noise=0.0)
  env = envelope.envelope(df)
  assert len(env) > 100
  assert env["loss"].iloc[-1] < env["loss"].iloc[0]
  assert env["N"].is_monotonic_increasing  # ever larger models take over
  # every envelope point is at or below every run that covers its compute
  for run, part in df.groupby("run"):
    inside = env[(env["C"] >= part["C"].min()) & (env["C"] <= part["C"].max())]
    curve = np.exp(np.interp(np.log(inside["C"]), np.log(part["C"]), np.log(part["loss"])))
    assert np.all(inside["loss"].to_numpy() <= curve + 1e-12)


def test_allocation_exponents_are_positive_and_sum_to_one():
  fit = envelope.allocation(envelope.envelope(synthetic.learning_curves(noise=0.0)))
  assert 0.2 < fit.a < 1.0
  assert fit.a + fit.b == pytest.approx(1.0, abs=0.02)


def test_one_run_is_a_user_error():
  df = synthetic.learning_curves(sizes=(1e8,))
  with pytest.raises(UserError, match="2 or more runs"):
    envelope.envelope(df)
