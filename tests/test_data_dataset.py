"""make_dataset on the embedded corpus: prepared once per session in a tmp data_dir."""

import gin
import numpy as np
import pytest

from scaling.data import index
from scaling.data import make_dataset
from scaling.data import tokenizers
from scaling.errors import UserError


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


def test_stdlib_train_tokens_count_bytes_and_one_eos_per_document(stdlib_dataset):
  assert stdlib_dataset.train_tokens == stdlib_dataset.info["split_bytes"]["train"] + len(stdlib_dataset.train_texts)
  assert stdlib_dataset.epochs(stdlib_dataset.train_tokens, 256, 1) == pytest.approx(1.0, abs=1e-4)
  assert stdlib_dataset.epochs(4096 * 100, 64, 8, unique_tokens=4096 * 25) == 4.0
  with pytest.raises(UserError, match="exceeds the .* tokens of the training split of stdlib_source"):
    stdlib_dataset.train_iterator(64, 8, unique_tokens=stdlib_dataset.train_tokens + 1)


def test_the_validation_split_holds_over_a_megabyte_and_too_many_eval_tokens_fail_before_reading(stdlib_dataset):
  assert stdlib_dataset.validation_tokens > 1_000_000
  stdlib_dataset.check_eval_tokens(262_144, 1024)
  too_many = stdlib_dataset.validation_tokens + 1
  message = rf"^train.eval_tokens = {too_many} exceeds the validation split of stdlib_source"
  with pytest.raises(UserError, match=message):
    stdlib_dataset.eval_batches(seq_len=256, batch_size=8, num_tokens=too_many)


def test_the_eval_set_is_spread_over_the_whole_validation_split(stdlib_dataset):
  batches = stdlib_dataset.eval_batches(seq_len=256, batch_size=8, num_tokens=256 * 64)
  rows = {bytes(r) for b in batches for r in np.where(b["inputs"] < 256, b["inputs"], 10).astype(np.uint8)}
  texts = list(stdlib_dataset.validation_texts)
  documents_hit = {i for i, t in enumerate(texts) if any(r[1:64] in t for r in rows)}
  assert len(documents_hit) >= len(texts) // 3 and max(documents_hit) >= len(texts) - 3


def test_gin_bindings_choose_the_source(tmp_path):
  for i in range(5):
    (tmp_path / f"{i}.txt").write_text(f"text {i} " * 50)
  gin.clear_config()
  try:
    gin.parse_config(["data.source = 'text'", f"data.files = '{tmp_path}/*.txt'", "data.boundaries = 'eos'",
                      f"data.data_dir = '{tmp_path / 'tfds'}'"])
    ds = make_dataset()
  finally:
    gin.clear_config()
  assert ds.name.startswith("text_files/") and ds.boundaries == "eos"
  assert len(ds.train_texts) + len(ds.validation_texts) == 5


def test_sentencepiece_dataset_reports_bytes_per_token(tmp_path):
  texts = [f"row {i}: the quick brown fox jumps over the lazy dog {i % 13}\n".encode() * 20 for i in range(40)]
  for i, text in enumerate(texts):
    (tmp_path / f"{i}.txt").write_bytes(text)
  model = tokenizers.train_sentencepiece(texts, tmp_path / "sp.model", vocab_size=320, model_type="bpe")
  ds = make_dataset(source="text", files=str(tmp_path), data_dir=str(tmp_path / "tfds"), tokenizer="sentencepiece",
                    tokenizer_model=str(model), vocab_size=320)
  assert ds.tokenizer.identity()["kind"] == "sentencepiece"
  assert ds.train_tokens == sum(len(ds.tokenizer.encode(t)) + 1 for t in ds.train_texts)
  assert ds.epochs(ds.train_tokens * 3, 32, 2) == pytest.approx(3.0, rel=1e-2)
  batches = ds.eval_batches(seq_len=32, batch_size=2)
  validation_bytes = sum(len(t) for t in ds.validation_texts)
  assert sum(b["bytes"].sum() for b in batches) == validation_bytes
  assert sum(b["weights"].sum() for b in batches) == ds.validation_tokens < 0.75 * validation_bytes
  reopened = make_dataset(source="text", files=str(tmp_path), data_dir=str(tmp_path / "tfds"),
                          tokenizer="sentencepiece", tokenizer_model=str(model))
  reopened.tokenizer.encode = lambda text: pytest.fail("re-encoded the split for its index")
  assert reopened.train_tokens == ds.train_tokens and reopened.validation_tokens == ds.validation_tokens
  assert next(reopened.train_iterator(seq_len=32, global_batch=2))["inputs"].shape == (2, 32)


@pytest.mark.parametrize("knobs, message", [
    ({"source": "hdfs"}, "unknown data.source 'hdfs'"),
    ({"source": "text"}, "needs data.files"),
    ({"source": "tfds"}, "needs data.name"),
    ({"boundaries": "none"}, "unknown data.boundaries 'none'"),
    ({"tokenizer": "sentencepiece"}, "needs data.tokenizer_model"),
])
def test_bad_knobs_are_user_errors(tmp_path, knobs, message):
  with pytest.raises(UserError, match=message):
    make_dataset(data_dir=str(tmp_path), **knobs)


def test_an_index_is_cached_where_the_dataset_dir_is_read_only_too(tmp_path, monkeypatch):
  monkeypatch.setattr(index, "HOME_CACHE", str(tmp_path / "home"))
  dirs = index.cache_dirs("gs://bucket/tfds/c4/en/3.0.1", "c4/en/3.0.1")
  assert dirs == [tmp_path / "home" / "c4_en_3.0.1"]
  texts = [b"abc", b"defgh"]
  built = index.load_or_build(texts, tokenizers.ByteTokenizer(), "train", dirs)
  assert list(built.starts) == [0, 4, 10]
  assert sorted(p.name.split(".")[1] for p in dirs[0].iterdir()) == ["starts", "tokens"]
  again = index.load_or_build(texts, tokenizers.ByteTokenizer(), "train", dirs)
  np.testing.assert_array_equal(again.tokens, built.tokens)
