"""End-to-end tests of `scaling train`: bad gin input exits 2 with one line; a real run fills its run directory."""

import math

import pytest

from conftest import run_cli
from scaling import runs

TINY = [
    "model.size = 'nano'",
    "train.seq_len = 128",
    "train.global_batch = 16",
    "train.eval_every = 40",
    "train.eval_tokens = 16384",
    "train.learning_rate = 0.01",
]


def _bindings(*extra):
  return [f"--gin_bindings={b}" for b in (*TINY, *extra)]


@pytest.mark.parametrize(
    "binding,message",
    [
        ("trian.tokens = 5", "No configurable matching 'trian'"),
        ("train.tokenz = 5", "doesn't have a parameter named 'tokenz'"),
        ("train.tokens = 'lots'", "train.tokens must be a positive integer, got 'lots'"),
        ("train.tokens = -100", "train.tokens must be a positive integer"),
        ("model.size = 'huge'", "model.size='huge' is not a known size"),
        ("train.tokens = ", "bad --gin_bindings='train.tokens = '"),
        ("train.unique_tokens = 1000000000000", "train.unique_tokens = 1000000000000 exceeds the"),
    ],
)
def test_bad_bindings_exit_2_with_one_line(tmp_path, binding, message):
  result = run_cli("train", f"--run_dir={tmp_path / 'run'}", f"--gin_bindings={binding}")
  assert result.returncode == 2, result.stderr
  errors = [l for l in result.stderr.splitlines() if "error" in l]
  assert len(errors) == 1 and message in errors[0], result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run" / "status.json").exists()


def test_missing_required_value_and_missing_file(tmp_path):
  gin_file = tmp_path / "no_budget.gin"
  gin_file.write_text("model.size = 'nano'\n")
  result = run_cli("train", f"--run_dir={tmp_path / 'run'}", f"--gin_file={gin_file}")
  assert result.returncode == 2 and "train.tokens is required but not set" in result.stderr
  result = run_cli("train", f"--run_dir={tmp_path / 'run'}", f"--gin_file={tmp_path / 'nope.gin'}")
  assert result.returncode == 2 and "nope.gin' does not exist" in result.stderr


def test_bad_mesh_exits_2(tmp_path):
  result = run_cli("train", f"--run_dir={tmp_path / 'run'}", "--mesh=3x1x1", *_bindings("train.tokens = 4096"))
  assert result.returncode == 2 and "--mesh='3x1x1' needs 3 devices but 8 are available" in result.stderr


@pytest.mark.slow
def test_short_run_on_a_2x2x2_mesh_learns_and_writes_the_run_directory(tmp_path):
  run_dir = tmp_path / "run"
  result = run_cli("train", f"--run_dir={run_dir}", "--mesh=2x2x2", *_bindings("train.tokens = 200000"))
  assert result.returncode == 0, result.stderr[-3000:]
  info = runs.read_json(run_dir / "run.json")
  for key in ("run_id", "params_total", "params_embedding", "params_non_embedding", "tokens_planned", "flops_per_token",
              "seq_len", "global_batch", "mesh", "devices", "seed", "versions", "tokenizer"):
    assert key in info, key
  assert set(info["flops_per_token"]) >= {"6N", "6N_total", "chinchilla", "xla"}
  assert info["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2} and info["tokens_planned"] == 200000
  assert info["params_total"] == info["params_embedding"] + info["params_non_embedding"]
  assert runs.read_status(run_dir)["state"] == "done"
  records = runs.read_metrics(run_dir)
  steps = [r["step"] for r in records]
  assert steps == sorted(set(steps)) and steps[-1] == info["steps"]
  for key in ("step", "tokens", "train_loss", "lr", "grad_norm", "step_time_s", "tokens_per_s", "flops_per_s", "mfu"):
    assert key in records[-1], key
  evals = [r["eval_loss"] for r in records if "eval_loss" in r]
  assert len(evals) >= 2 and evals[-1] < evals[0]
  assert evals[-1] < 3.0 < math.log(256)  # below the corpus's unigram byte entropy (~3.25 nats)
  assert "train.tokens = 200000" in (run_dir / "config.gin").read_text()
  assert list((run_dir / "tb").iterdir())
  again = run_cli("train", f"--run_dir={run_dir}", *_bindings("train.tokens = 200000"))
  assert again.returncode == 0 and "already done" in again.stderr


def test_config_gin_alone_reproduces_the_run(tmp_path):
  first, second = tmp_path / "first", tmp_path / "second"
  result = run_cli("train", f"--run_dir={first}", *_bindings("train.tokens = 16384", "train.log_every = 2", "optimizer.schedule = 'wsd'"))
  assert result.returncode == 0, result.stderr[-3000:]
  operative = (first / "config.gin").read_text()
  for knob in ("optimizer.eps", "optimizer.cooldown_fraction", "model.size = 'nano'", "train.seed = 0", "data.source"):
    assert knob in operative, knob
  result = run_cli("train", f"--run_dir={second}", f"--gin_file={first / 'config.gin'}")
  assert result.returncode == 0, result.stderr[-3000:]
  losses = lambda d: [(r["step"], r.get("train_loss"), r.get("eval_loss")) for r in runs.read_metrics(d)]
  assert losses(first) == losses(second) and len(losses(first)) == 5  # the step-0 evaluation, then 4 records
