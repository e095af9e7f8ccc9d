"""Sweep expansion: IsoFLOP points on their budgets, stable run ids, size rules, the step floor, cooldown branches."""

import math
from pathlib import Path

import pytest

from scaling import flops, optim
from scaling.errors import UserError
from scaling.sweep import expand

TINY = str(Path(__file__).parent / "data" / "sweeps" / "tiny.gin")


def _expand(*bindings: str):
  sweep, base = expand.load([TINY], bindings)
  return sweep, base, expand.expand(sweep, base)


def test_isoflop_runs_sit_on_their_budget_within_one_batch():
  sweep, base, specs = _expand("sweep.parts = [@isoflop()]", "isoflop.budgets = [2e10, 8e10]", "isoflop.sizes = 4",
                               "isoflop.spread = 6", "sweep.min_steps = 5")
  assert len(specs) == 8
  for s in specs:
    batch_tokens = s.global_batch * s.seq_len
    planned = s.flops_per_token * s.tokens
    assert abs(planned - s.budget) <= s.flops_per_token  # D = C / flops_per_token, rounded to a token
    assert 0 <= s.C - s.budget <= s.flops_per_token * batch_tokens  # what the trainer reaches: within one batch
    assert s.convention == "chinchilla"
  for budget in (2e10, 8e10):
    ns = sorted(s.N for s in specs if s.budget == budget)
    assert len(set(ns)) == 4 and ns[-1] / ns[0] > 3  # distinct sizes spread over the budget
    steps = math.log(ns[-1] / ns[0]) / 3
    assert all(abs(math.log(b / a) - steps) < 0.5 for a, b in zip(ns, ns[1:]))  # roughly even in log N


def test_isoflop_flops_per_token_is_the_named_convention():
  _, _, specs = _expand("sweep.parts = [@isoflop()]", "isoflop.budgets = [3e10]", "isoflop.sizes = 3",
                        "sweep.convention = '6N_total'", "sweep.min_steps = 5")
  for s in specs:
    assert s.flops_per_token == pytest.approx(6 * s.params_total)
    assert s.N == s.params_total


def test_run_ids_are_stable_and_change_with_what_matters():
  ids = [s.run_id for s in _expand()[2]]
  assert ids == [s.run_id for s in _expand()[2]]
  assert len(set(ids)) == len(ids)
  # Cadence and checkpoint policy do not change the trained function: same runs.
  assert [s.run_id for s in _expand("train.eval_every = 7", "checkpoint.keep_last = 5")[2]] == ids
  # Adding a budget adds runs and leaves the others alone.
  more = [s.run_id for s in _expand("grid.tokens = [10240, 20480]")[2]]
  assert set(ids) < set(more) and len(more) == 2 * len(ids)
  # A training setting, a seed or a part's own binding makes new runs.
  for binding in ("optimizer.b2 = 0.99", "sweep.seeds = [1]", "grid.bindings = ['optimizer.b1 = 0.8']"):
    assert not set(ids) & {s.run_id for s in _expand(binding)[2]}, binding


def test_lr_and_batch_rules_follow_their_formulas():
  _, base, specs = _expand("sweep.parts = [@isoflop()]", "isoflop.budgets = [3e10, 1e11]", "isoflop.sizes = 3",
                           "size_rules.learning_rate = (0.3118, -0.125, 'C')",
                           "size_rules.batch_tokens = (0.292, 0.3271, 'C')", "size_rules.batch_multiple = 4",
                           "size_rules.min_batch = 4", "sweep.min_steps = 5")
  for s in specs:
    assert s.learning_rate == pytest.approx(0.3118 * s.budget ** -0.125)
    want = 0.292 * s.budget ** 0.3271 / base.train.seq_len
    assert s.global_batch == max(4, 4 * round(want / 4))
  _, _, by_n = _expand("size_rules.learning_rate = (2.0, -0.5, 'N')")
  for s in by_n:
    assert s.learning_rate == pytest.approx(2.0 * s.N ** -0.5)
    assert "train.learning_rate = " + repr(s.learning_rate) in s.bindings


def test_the_step_floor_lowers_the_batch_or_refuses_the_budget():
  _, _, specs = _expand("sweep.min_steps = 100", "train.global_batch = 16", "size_rules.min_batch = 2",
                        "size_rules.batch_multiple = 1")
  for s in specs:
    assert s.steps >= 100 and s.global_batch < 16 and s.batch_lowered_for_step_floor
  with pytest.raises(UserError, match=r"sweep.min_steps = 5000.*smallest batch"):
    _expand("sweep.min_steps = 5000")


def test_cooldown_branches_start_where_the_schedules_part():
  _, base, specs = _expand("sweep.parts = [@cooldowns()]", "grid.params = None", "cooldowns.params = [16000]",
                           "cooldowns.tokens = [8192, 16384, 32768]", "cooldowns.cooldown_fraction = 0.25")
  parent, *branches = specs
  assert parent.role == "cooldown_parent" and [b.role for b in branches] == ["cooldown"] * 3
  assert "optimizer.schedule = 'constant'" in parent.bindings
  warmup = [b for b in parent.bindings if b.startswith("optimizer.warmup_steps")]
  for b in branches:
    assert b.parent == parent.run_id and b.global_batch == parent.global_batch
    assert warmup[0] in b.bindings and "optimizer.schedule = 'wsd'" in b.bindings
    cfg = optim.OptimizerConfig(schedule="wsd", cooldown_fraction=0.25, warmup_steps=int(warmup[0].split("=")[1]))
    lr_wsd = optim.learning_rate_schedule(cfg, 1.0, b.steps)
    lr_const = optim.learning_rate_schedule(optim.OptimizerConfig(schedule="constant", warmup_steps=cfg.warmup_steps), 1.0, b.steps)
    assert all(float(lr_wsd(s)) == float(lr_const(s)) for s in range(b.branch_step))  # identical before the branch
    assert float(lr_wsd(b.branch_step)) < 1.0  # and the cooldown starts right after it
  assert parent.steps == max(b.branch_step for b in branches)
  assert f"checkpoint.at_steps = {sorted(b.branch_step for b in branches)}" in parent.bindings


def test_grid_budgets_per_parameter_and_data_constrained_epochs():
  _, _, specs = _expand("grid.tokens = None", "grid.tokens_per_param = [0.5]")
  for s in specs:
    assert s.tokens == round(0.5 * s.N)
  _, _, dc = _expand("sweep.parts = [@data_constrained()]", "data_constrained.params = [16000]",
                     "data_constrained.unique_tokens = [8192]", "data_constrained.epochs = [1, 4]")
  assert sorted(s.tokens for s in dc) == [8192, 32768]
  assert all("train.unique_tokens = 8192" in s.bindings for s in dc)
  assert sorted(round(s.epochs) for s in dc) == [1, 4]


def test_named_sizes_use_the_size_table():
  _, base, specs = _expand("grid.params = None", "grid.sizes = ['nano']", "model.head_dim = None")
  (s,) = specs
  assert (s.shape.width, s.shape.depth) == (64, 2)
  assert "model.size = 'nano'" in s.bindings and "model.params = None" in s.bindings


def test_a_shape_knob_in_the_base_config_is_refused():
  with pytest.raises(UserError, match="model.width"):
    _expand("model.width = 64")


def test_flops_per_token_matches_the_trainer_count():
  _, base, specs = _expand()
  from scaling.sizes import model_config

  for s in specs:
    cfg = model_config(vocab_size=base.vocab_size, params=float(s.bindings[1].split("=")[1]))
    assert flops.flops_per_token(cfg, base.train.seq_len)["chinchilla"] == s.flops_per_token


def test_an_isoflop_centre_can_be_given():
  _, _, specs = _expand("sweep.parts = [@isoflop()]", "isoflop.budgets = [8e10]", "isoflop.sizes = 3",
                        "isoflop.spread = 4", "isoflop.centre = 1.2e5", "sweep.min_steps = 5")
  ns = sorted(s.N for s in specs)
  assert ns[0] < 1.2e5 < ns[-1] and 2.5 < ns[-1] / ns[0] < 7
