"""make_dataset on the embedded corpus: prepared once per session in a tmp data_dir."""

import numpy as np
import pytest

from scaling.data import make_dataset


@pytest.fixture(scope="module")
def stdlib_dataset(tmp_path_factory):
  return make_dataset(data_dir=str(tmp_path_factory.mktemp("tfds")))


def test_stdlib_dataset_has_name_tokenizer_and_metadata(stdlib_dataset):
  assert stdlib_dataset.name.startswith("stdlib_source/py3.")
  assert stdlib_dataset.tokenizer.identity()["kind"] == "bytes"
  assert stdlib_dataset.tokenizer.vocab_size == 258
  assert len(stdlib_dataset.info["content_hash"]) == 64


def test_stdlib_train_batches_have_the_contracted_fields(stdlib_dataset):
  batch = next(stdlib_dataset.train_iterator(seq_len=64, global_batch=8, seed=0))
  dtypes = {"inputs": np.int32, "targets": np.int32, "weights": np.float32, "segment_ids": np.int32,
            "positions": np.int32, "bytes": np.float32}
  assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {k: (np.dtype(d), (8, 64)) for k, d in dtypes.items()}
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])


def test_stdlib_eval_batches_are_identical_across_calls(stdlib_dataset):
  first = stdlib_dataset.eval_batches(seq_len=128, batch_size=4, num_tokens=5000)
  second = stdlib_dataset.eval_batches(seq_len=128, batch_size=4, num_tokens=5000)
  assert sum(b["weights"].sum() for b in first) == 5000
  for a, b in zip(first, second, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
