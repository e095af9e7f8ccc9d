"""Tests of the run loop's contract: branching, failures recorded in status.json, refused configs, caches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ckpt_testlib import CURVE_KEYS, curve, run_to_end, scaling_env, train_args  # noqa: F401  (fixture)
from scaling import cache, config, loop, runs
from scaling.errors import UserError

# 40 steps of 8 x 32 tokens; a checkpoint every 10 steps.
STEP_TOKENS = 8 * 32
CONSTANT = ("optimizer.warmup_fraction = 0.0", "optimizer.schedule = 'constant'", "checkpoint.keep_last = 10",
            "checkpoint.every_steps = 10", "train.log_every = 5", "train.eval_every = 10")
# WSD over 30 steps with a 10-step cooldown: its first 20 steps are the constant run's.
WSD = ("optimizer.warmup_fraction = 0.0", "optimizer.schedule = 'wsd'", "optimizer.cooldown_fraction = 0.3333333",
       "optimizer.final_lr_fraction = 0.0", f"train.tokens = {30 * STEP_TOKENS}", "train.log_every = 5",
       "train.eval_every = 10")


def _curve(run_dir):
  return [{k: v for k, v in r.items() if k in CURVE_KEYS} for r in curve(run_dir)]


@pytest.mark.slow
def test_branch_equals_a_run_trained_straight_through(tmp_path, scaling_env):
  parent, branch, straight = tmp_path / "constant", tmp_path / "cooldown", tmp_path / "straight"
  run_to_end(train_args(parent, *CONSTANT, f"train.tokens = {40 * STEP_TOKENS}"), scaling_env, tmp_path / "p.log")
  run_to_end(train_args(straight, *WSD), scaling_env, tmp_path / "s.log")
  out = run_to_end(train_args(branch, *WSD, extra=(f"--branch_from={parent}@20",)), scaling_env, tmp_path / "b.log")
  assert f"branching {branch} from {parent} at step 20" in out
  assert _curve(branch) == _curve(straight)
  info = runs.read_run_info(branch)
  assert info["parent"]["step"] == 20 and info["parent"]["run_dir"] == str(parent.absolute())
  assert runs.read_status(branch)["state"] == "done"
  # The newest checkpoint by default; a different model is refused with one line, before any work.
  other = subprocess.run(train_args(tmp_path / "wide", *WSD, "model.width = 64", extra=(f"--branch_from={parent}",)),
                         env=scaling_env, capture_output=True, text=True, timeout=300)
  assert other.returncode == 2 and "trained another model or data order (model." in other.stderr, other.stderr
  assert "Traceback" not in other.stderr and not (tmp_path / "wide").exists()
  missing = subprocess.run(train_args(tmp_path / "x", *WSD, extra=(f"--branch_from={parent}@7",)),
                           env=scaling_env, capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
      f"scaling train: error: --branch_from: {parent} has no checkpoint at step 7; it has [10, 20, 30, 40]"]
  assert not (tmp_path / "x").exists()  # refused before the run directory is made (it was left 'failed')
  assert "WARNING" not in out  # Orbax's two lines about opening the parent read-only


def test_done_run_with_another_config_exits_2_but_cadence_may_change(tmp_path, scaling_env):
  run_dir = tmp_path / "run"
  tiny = (f"train.tokens = {10 * STEP_TOKENS}", "train.log_every = 5")
  out = run_to_end(train_args(run_dir, *tiny), scaling_env, tmp_path / "a.log")
  assert "scaling train: step 10/10" in out  # the plain progress line off a TTY
  first = curve(run_dir)
  assert first[0]["step"] == 0 and "eval_loss" in first[0]  # evaluated at step 0
  again = run_to_end(train_args(run_dir, *tiny, "train.eval_every = 3", "train.log_every = 2"), scaling_env,
                     tmp_path / "b.log")
  assert "already done" in again and curve(run_dir) == first
  other = subprocess.run(train_args(run_dir, *tiny, "train.learning_rate = 0.5"), env=scaling_env,
                         capture_output=True, text=True, timeout=300)
  assert other.returncode == 2, other.stderr
  assert "is done, but its config differs from this one (train.learning_rate" in other.stderr
  assert runs.read_status(run_dir)["state"] == "done" and curve(run_dir) == first


def _parse_tiny(*bindings):
  from ckpt_testlib import GIN_FILES, TINY

  config.parse(list(GIN_FILES), [*TINY, *bindings])


def test_a_failure_during_compilation_is_recorded_as_failed(tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise RuntimeError("XLA ran out of something")

  monkeypatch.setattr(loop, "compile_train_step", broken)
  _parse_tiny()
  with pytest.raises(RuntimeError):
    loop.run(tmp_path / "run")
  status = runs.read_status(tmp_path / "run")
  assert status["state"] == "failed" and "XLA ran out of something" in status["reason"]
  assert status["pid"] and status["host"] and status["heartbeat"]


def test_bad_inputs_stop_before_the_run_directory_is_touched(tmp_path):
  _parse_tiny("model.attention_blocks = 3")
  with pytest.raises(UserError, match="model.attention_blocks=3 does not divide train.seq_len=32"):
    loop.run(tmp_path / "run")
  _parse_tiny("model.loss_chunks = 5")
  with pytest.raises(UserError, match="model.loss_chunks=5 does not divide train.seq_len=32"):
    loop.run(tmp_path / "run")
  _parse_tiny()
  (tmp_path / "file").write_text("")
  with pytest.raises(UserError, match="is a file, not a directory"):
    loop.run(tmp_path / "file")
  with pytest.raises(UserError, match="is a file, so the directory cannot be created"):
    loop.run(tmp_path / "file" / "run")
  (tmp_path / "corrupt").mkdir()
  (tmp_path / "corrupt" / "status.json").write_text("{not json")
  with pytest.raises(UserError, match="status.json is not valid JSON"):
    loop.run(tmp_path / "corrupt")
  with pytest.raises(UserError, match="not a run directory with checkpoints"):
    loop.run(tmp_path / "run", branch_from=str(tmp_path / "nowhere"))
  assert not (tmp_path / "run").exists()


def test_xla_flop_count_is_computed_once_per_shape(tmp_path, monkeypatch):
  monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path))
  calls = []
  monkeypatch.setattr(loop, "xla_flops_per_token", lambda *a: calls.append(a) or 123.0)
  _parse_tiny()
  cfgs = loop.resolve_configs()
  assert loop.xla_flops_cached(cfgs) == loop.xla_flops_cached(cfgs) == 123.0 and len(calls) == 1
  _parse_tiny("train.seq_len = 64")
  assert loop.xla_flops_cached(loop.resolve_configs()) == 123.0 and len(calls) == 2


def test_repetition_is_announced(tmp_path):
  _parse_tiny("train.unique_tokens = 8192")
  assert "repeating data: D = 122,880 tokens is 15.00 epochs of train.unique_tokens" in loop.repetition_note(
      loop.resolve_configs())
  assert "(8,192 unique tokens)" in loop.repetition_note(loop.resolve_configs())
  _parse_tiny("train.unique_tokens = 100")  # whole sequences repeat: 100 tokens are 4 sequences of 32
  assert loop.resolve_configs().train.seq_len == 32
  assert loop.repetition_note(loop.resolve_configs()).endswith(
      "epochs of train.unique_tokens (128 unique tokens, rounded up to whole sequences of 32)")
  _parse_tiny()
  assert loop.repetition_note(loop.resolve_configs()) is None


def test_compilation_cache_is_on_by_default(tmp_path):
  code = ("import jax; from scaling import cache; path = cache.enable_compilation_cache(); "
          "print(path, jax.config.jax_compilation_cache_dir)")
  env = {"SCALING_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=loop.config.REPO_ROOT)
  assert out.stdout.split() == [str(tmp_path / "jax")] * 2, out.stderr
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "mine")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=loop.config.REPO_ROOT)
  assert out.stdout.split() == [str(tmp_path / "mine")] * 2, out.stderr


def test_cached_value_survives_a_corrupt_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path))
  (tmp_path / "thing.json").write_text("{oops")
  assert cache.cached_value("thing", {"a": 1}, lambda: 5) == 5
  assert cache.cached_value("thing", {"a": 1}, lambda: 6) == 5
  assert json.loads((tmp_path / "thing.json").read_text())


def test_eval_tokens_beyond_the_validation_split_is_refused_before_work(tmp_path):
  _parse_tiny("train.eval_tokens = 1000000000")
  with pytest.raises(UserError, match="validation split"):
    loop.run(tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_branch_inherits_only_the_records_a_straight_run_writes():
  class Cadence:
    log_every, eval_every = 5, 10
  parent = [{"step": s, "train_loss": 1.0, "eval_loss": 2.0} for s in (0, 5, 10, 15, 20)] + [{"step": 22, "eval_loss": 2.0}]
  assert [r["step"] for r in loop.inherited_records(parent, 22, Cadence)] == [0, 5, 10, 15, 20]  # 22: the parent's last step only
  assert [r["step"] for r in loop.inherited_records(parent, 20, Cadence)] == [0, 5, 10, 15, 20]
  at_15 = loop.inherited_records(parent, 15, Cadence)
  assert at_15[-1] == {"step": 15, "train_loss": 1.0}  # logged but not evaluated on the branch's cadence
