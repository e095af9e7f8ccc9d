"""The demo's recipe checks: bracketed minima, the target budget, the epoch limit, the demo.* knobs."""

import pandas as pd
import pytest

from scaling.demo import recipe


def _budget(budget, losses, sizes=(5e4, 1e5, 2e5, 4e5)):
  return pd.DataFrame({"budget": budget, "N": sizes[:len(losses)], "loss": losses,
                       "D": [budget / (7 * n) for n in sizes[:len(losses)]],
                       "shape": [f"{i}x2" for i in range(len(losses))]})


def test_a_minimum_inside_the_sizes_passes():
  final = pd.concat([_budget(1e12, [2.0, 1.9, 1.95, 2.1]), _budget(3e12, [1.9, 1.8, 1.7, 1.75])])
  assert recipe.bracket_failures(final) == []


def test_a_minimum_at_the_smallest_size_names_the_budget_the_shape_and_the_fix():
  final = pd.concat([_budget(1e12, [1.8, 1.9, 2.0, 2.1]), _budget(3e12, [1.9, 1.8, 1.7, 1.75])])
  (line,) = recipe.bracket_failures(final)
  assert line.startswith("budget 1e+12: the lowest loss (1.8000) is at the smallest size (0x2, N = 5e+04)")
  assert "more tokens per parameter" in line and "lower isoflop.centre" in line


def test_a_minimum_at_the_largest_size_says_the_optimum_is_above():
  (line,) = recipe.bracket_failures(_budget(2e12, [2.1, 2.0, 1.9, 1.8]))
  assert "largest size (3x2, N = 4e+05)" in line and "fewer tokens per parameter" in line


def test_a_budget_with_fewer_than_three_finished_sizes_fails():
  (line,) = recipe.bracket_failures(_budget(2e12, [2.1, 2.0]))
  assert "only 2 finished size(s)" in line


def test_unsorted_rows_are_ordered_by_N():
  final = _budget(1e12, [2.0, 1.9, 1.95, 2.1]).iloc[[2, 0, 3, 1]]
  assert recipe.bracket_failures(final) == []


def test_target_budget_is_the_factor_times_the_largest():
  assert recipe.target_budget([2.5e12, 5e12, 3.5e12], 10.0) == pytest.approx(5e13)


def test_the_target_batch_and_lr_are_held_to_what_the_sweep_trained():
  sweep = pd.DataFrame({"batch": [16, 24, 32, 28], "lr": [0.0088, 0.0088, 0.0081, 0.0084]})
  assert recipe.within_sweep(68, 0.0060, sweep) == (32, 0.0081)  # the rules at 10x leave both ranges
  assert recipe.within_sweep(20, 0.0085, sweep) == (20, 0.0085)  # inside: kept
  assert recipe.within_sweep(8, 0.0100, sweep) == (8, 0.0088)  # a smaller batch is kept; the LR is held


def test_a_target_beyond_one_epoch_is_refused_with_the_numbers():
  assert recipe.epochs_failure(2e7, 3e7, 1.0) is None
  assert recipe.epochs_failure(2e7, None, 1.0) is None
  line = recipe.epochs_failure(4.5e7, 3e7, 1.0)
  assert "1.50 epochs" in line and "demo.max_epochs = 1" in line


@pytest.mark.parametrize("knob, value", [("target_factor", 0.5), ("bootstrap", -1), ("bootstrap", 2.5),
                                         ("level", 1.5), ("level", 1), ("max_epochs", 0)])
def test_bad_settings_are_refused(knob, value):
  with pytest.raises(ValueError, match=f"demo.{knob}"):
    recipe.settings(**{knob: value})


def test_default_settings_are_the_acceptance_protocol():
  s = recipe.settings()
  assert (s.target_factor, s.level, s.max_epochs) == (10.0, 0.9, 1.0) and s.bootstrap >= 100
