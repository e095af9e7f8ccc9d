"""`scaling tokenizer train` through the real dispatcher: a model on a split, or exit 2 and one line."""

import os
import pathlib
import subprocess
import sys

import pytest

from scaling.data import tokenizers

REPO = pathlib.Path(__file__).resolve().parents[1]


def _scaling(*args, data_dir):
  env = {**os.environ, "PYTHONPATH": str(REPO), "SCALING_DATA_DIR": str(data_dir)}
  return subprocess.run([sys.executable, "-m", "scaling", *args], env=env, capture_output=True, text=True,
                        timeout=120)


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
    (["--gin_file=/no/such/file.gin"], "gin file /no/such/file.gin does not exist"),
    (["--gin_bindings=data.source = 'tfds'", "--gin_bindings=data.name = 'no_such_dataset_xyz'"],
     "unknown TFDS dataset 'no_such_dataset_xyz'"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
  result = _scaling("tokenizer", "train", *args, f"--out={tmp_path / 'x.model'}", data_dir=tmp_path / "tfds")
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert message in result.stderr
