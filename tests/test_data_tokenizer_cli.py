"""`scaling tokenizer train` through the real dispatcher: a model on a split, or exit 2 and one line."""

import os
import pathlib
import subprocess
import sys

import pytest

from scaling.data import tokenizers

REPO = pathlib.Path(__file__).resolve().parents[1]


def _scaling(*args, data_dir, cwd=None):
  env = {**os.environ, "PYTHONPATH": str(REPO), "SCALING_DATA_DIR": str(data_dir)}
  return subprocess.run([sys.executable, "-m", "scaling", *args], env=env, capture_output=True, text=True,
                        timeout=120, cwd=cwd)


@pytest.fixture
def corpus(tmp_path):
  root = tmp_path / "corpus"
  root.mkdir()
  for i in range(60):
    (root / f"{i}.txt").write_text(f"def handler_{i % 9}(request):\n    return request.value * {i}\n" * 5)
  return root


def test_train_writes_a_model_of_the_asked_vocab_size(tmp_path, corpus):
  out = tmp_path / "tok" / "text.model"
  result = _scaling("tokenizer", "train", "--gin_bindings=data.source = 'text'", f"--gin_bindings=data.files = '{corpus}'",
                    f"--out={out}", "--vocab_size=300", data_dir=tmp_path / "tfds")
  assert result.returncode == 0, result.stderr
  assert f"wrote {out}: bpe, vocab 300" in result.stdout
  assert tokenizers.SentencePieceTokenizer(out).vocab_size == 300


@pytest.mark.parametrize("args, message", [
    (["--gin_bindings=data.source = 'text'", "--gin_bindings=data.files = '/no/such/dir'"],
     "data.files: /no/such/dir does not exist"),
    (["--gin_file=/no/such/file.gin"], "gin file '/no/such/file.gin' does not exist"),
    (["--gin_bindings=data.source = 'tfds'", "--gin_bindings=data.name = 'no_such_dataset_xyz'"],
     "unknown TFDS dataset 'no_such_dataset_xyz'"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
  result = _scaling("tokenizer", "train", *args, f"--out={tmp_path / 'x.model'}", data_dir=tmp_path / "tfds")
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert message in result.stderr


def test_gin_files_resolve_as_for_train_and_out_under_a_file_is_refused_first(tmp_path, corpus):
  """From any directory, `configs/...` and a user file including it are found in the package (only the working
  directory was searched); an --out under a file is one line before training (a traceback after it)."""
  mine = tmp_path / "my.gin"
  mine.write_text(f"include 'configs/data/text.gin'\ndata.files = '{corpus}'\n")
  for gin_file in (mine, "configs/data/text.gin"):
    out = tmp_path / "tok" / f"{pathlib.Path(gin_file).stem}.model"
    result = _scaling("tokenizer", "train", f"--gin_file={gin_file}", f"--gin_bindings=data.files = '{corpus}'",
                      f"--out={out}", "--vocab_size=300", data_dir=tmp_path / "tfds", cwd=tmp_path)
    assert result.returncode == 0 and out.is_file(), result.stderr
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  result = _scaling("tokenizer", "train", f"--out={blocker / 'x.model'}", data_dir=tmp_path / "tfds")
  assert result.returncode == 2 and result.stderr.strip().splitlines() == [
      f"scaling tokenizer: error: --out {blocker / 'x.model'}: {blocker} is a file, so the directory cannot be created"]
