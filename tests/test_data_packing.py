"""Packing: sequences tile the split's stream (every token a target once) in any order; boundaries hold."""

import collections

import numpy as np
import pytest

from scaling.data import index
from scaling.data import packing
from scaling.data.tokenizers import ByteTokenizer

TOK = ByteTokenizer()
EOS = TOK.eos_id


def _docs(n: int, seed: int = 0) -> list[bytes]:
  rng = np.random.default_rng(seed)
  return [bytes(rng.integers(97, 123, size=int(rng.integers(1, 90)), dtype=np.uint8)) for _ in range(n)]


def _stream(docs, cache_bytes=packing.CACHE_BYTES, mapped=False):
  split_index = index.build(docs, TOK)
  return packing.TokenStream(docs, TOK.encode, EOS, split_index.starts, cache_bytes=cache_bytes,
                             tokens=split_index.tokens if mapped else None)


def _rows(docs, *, seq_len, boundaries="segments", sequences=None):
  stream = _stream(docs)
  sequences = range(stream.num_sequences(seq_len)) if sequences is None else sequences
  rows = [packing.pack_rows(*stream.sequence(k, seq_len), seq_len=seq_len, num_rows=1, boundaries=boundaries,
                            token_bytes=TOK.token_bytes, pad_id=TOK.pad_id) for k in sequences]
  return stream, packing.stack_rows(rows)


@pytest.mark.parametrize("seq_len", [1, 7, 64])
def test_sequences_tile_the_stream_so_no_token_is_lost_or_duplicated(seq_len):
  docs = _docs(40)
  stream, rows = _rows(docs, seq_len=seq_len)
  expected = np.concatenate([[EOS, *d] for d in docs])
  n = stream.num_sequences(seq_len)
  assert n == (len(expected) - 1) // seq_len
  np.testing.assert_array_equal(rows["inputs"].reshape(-1), expected[:n * seq_len])
  np.testing.assert_array_equal(rows["targets"].reshape(-1), expected[1:n * seq_len + 1])
  tail = collections.Counter(expected[n * seq_len + 1:].tolist())
  all_targets = collections.Counter(np.concatenate([[*d, EOS] for d in docs])[:-1].tolist())
  assert collections.Counter(rows["targets"].reshape(-1).tolist()) + tail == all_targets


def test_reading_out_of_order_from_documents_or_the_cached_stream_gives_the_same_sequences():
  docs = _docs(30)
  stream = _stream(docs)
  order = np.random.default_rng(0).permutation(stream.num_sequences(16))
  for other in (_stream(docs, cache_bytes=1), _stream(docs, mapped=True)):
    for k in order:
      for a, b in zip(stream.sequence(int(k), 16), other.sequence(int(k), 16), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_a_document_that_disagrees_with_the_index_is_an_error():
  docs = _docs(5)
  wrong = index.starts_from_lengths(np.diff(index.build(docs, TOK).starts) + 1)
  stream = packing.TokenStream(docs, TOK.encode, EOS, wrong)
  with pytest.raises(ValueError, match="token index says"):
    stream.sequence(0, 8)


def test_segments_start_at_each_eos_input_and_end_by_predicting_eos():
  _, rows = _rows(_docs(30), seq_len=50, sequences=np.random.default_rng(0).permutation(20))
  for inputs, targets, seg, pos in zip(rows["inputs"], rows["targets"], rows["segment_ids"], rows["positions"]):
    starts = (inputs == EOS) & (np.arange(len(inputs)) > 0)
    np.testing.assert_array_equal(seg, 1 + np.cumsum(starts))
    start_index = np.maximum.accumulate(np.where(starts, np.arange(len(inputs)), 0))
    np.testing.assert_array_equal(pos, np.arange(len(inputs)) - start_index)
    assert np.all(targets[:-1][seg[1:] != seg[:-1]] == EOS)


def test_eos_boundaries_make_one_segment_per_row():
  _, rows = _rows(_docs(30), seq_len=32, sequences=range(10), boundaries="eos")
  np.testing.assert_array_equal(rows["segment_ids"], np.ones((10, 32)))
  np.testing.assert_array_equal(rows["positions"], np.tile(np.arange(32), (10, 1)))


def test_bytes_count_document_bytes_not_eos():
  docs = _docs(20)
  _, rows = _rows(docs, seq_len=16)
  np.testing.assert_array_equal(rows["bytes"], (rows["targets"] != EOS).astype(np.float32))


def test_pack_rows_pads_a_short_stream_with_zero_weight():
  tokens = np.array([EOS, 1, 2, 3, EOS, 4], np.int32)
  units = np.array([0, 0, 0, 0, 1, 1])
  offsets = np.array([0, 1, 2, 3, 0, 1])
  rows = packing.pack_rows(tokens, units, offsets, seq_len=4, num_rows=2, boundaries="segments",
                           token_bytes=TOK.token_bytes, pad_id=TOK.pad_id)
  np.testing.assert_array_equal(rows["weights"], [[1, 1, 1, 1], [1, 0, 0, 0]])
  np.testing.assert_array_equal(rows["segment_ids"], [[1, 1, 1, 1], [1, 0, 0, 0]])
  np.testing.assert_array_equal(rows["positions"], [[0, 1, 2, 3], [0, 0, 0, 0]])
  np.testing.assert_array_equal(rows["targets"], [[1, 2, 3, EOS], [4, TOK.pad_id, TOK.pad_id, TOK.pad_id]])
  np.testing.assert_array_equal(rows["bytes"], [[1, 1, 1, 0], [1, 0, 0, 0]])
