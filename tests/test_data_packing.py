"""Packing: every document token is a target exactly once per epoch, and boundaries are honoured."""

import collections

import numpy as np
import pytest

from scaling.data import packing
from scaling.data.tokenizers import ByteTokenizer

TOK = ByteTokenizer()
EOS = TOK.eos_id


def _docs(n: int, seed: int = 0) -> list[bytes]:
  rng = np.random.default_rng(seed)
  return [bytes(rng.integers(97, 123, size=int(rng.integers(1, 90)), dtype=np.uint8)) for _ in range(n)]


def _rows(docs, *, lanes, seq_len, steps, boundaries="segments", seed=0):
  stream = packing.DocumentStream(docs, TOK.encode, EOS, seed)
  out = []
  for r in range(lanes):
    lane = packing.Lane(stream, first=r, stride=lanes)
    rows = [packing.pack_rows(*lane.next_row(seq_len), seq_len=seq_len, num_rows=1, boundaries=boundaries,
                              token_bytes=TOK.token_bytes, pad_id=TOK.pad_id) for _ in range(steps)]
    out.append(packing.stack_rows(rows))
  return stream, out


def test_each_epoch_is_a_permutation_of_the_documents_and_epochs_differ():
  stream = packing.DocumentStream(_docs(50), TOK.encode, EOS, seed=3)
  first = [stream.document_index(p) for p in range(50)]
  second = [stream.document_index(p) for p in range(50, 100)]
  assert sorted(first) == sorted(second) == list(range(50))
  assert first != second


@pytest.mark.parametrize("seq_len", [1, 7, 64])
def test_lane_rows_reproduce_the_lane_stream_so_no_token_is_lost_or_duplicated(seq_len):
  docs, lanes = _docs(40), 4
  stream, rows = _rows(docs, lanes=lanes, seq_len=seq_len, steps=200 // seq_len + 30)
  epoch_targets = collections.Counter()
  for r, lane_rows in enumerate(rows):
    units = [stream.document_index(r + j * lanes) for j in range(10 * len(docs))]
    expected = np.concatenate([[EOS, *docs[u]] for u in units])
    inputs = lane_rows["inputs"].reshape(-1)
    np.testing.assert_array_equal(inputs, expected[:len(inputs)])
    np.testing.assert_array_equal(lane_rows["targets"].reshape(-1), expected[1:len(inputs) + 1])
    epoch_units = [u for j, u in enumerate(units) if r + j * lanes < len(docs)]
    epoch_targets.update(np.concatenate([[*docs[u], EOS] for u in epoch_units]).tolist())
  all_tokens = collections.Counter(np.concatenate([[*d, EOS] for d in docs]).tolist())
  assert epoch_targets == all_tokens


def test_segments_start_at_each_eos_input_and_end_by_predicting_eos():
  _, rows = _rows(_docs(30), lanes=2, seq_len=50, steps=20)
  for lane_rows in rows:
    for inputs, targets, seg, pos in zip(lane_rows["inputs"], lane_rows["targets"], lane_rows["segment_ids"],
                                         lane_rows["positions"]):
      starts = (inputs == EOS) & (np.arange(len(inputs)) > 0)
      np.testing.assert_array_equal(seg, 1 + np.cumsum(starts))
      start_index = np.maximum.accumulate(np.where(starts, np.arange(len(inputs)), 0))
      np.testing.assert_array_equal(pos, np.arange(len(inputs)) - start_index)
      assert np.all(targets[:-1][seg[1:] != seg[:-1]] == EOS)


def test_eos_boundaries_make_one_segment_per_row():
  _, rows = _rows(_docs(30), lanes=1, seq_len=32, steps=10, boundaries="eos")
  np.testing.assert_array_equal(rows[0]["segment_ids"], np.ones((10, 32)))
  np.testing.assert_array_equal(rows[0]["positions"], np.tile(np.arange(32), (10, 1)))


def test_bytes_count_document_bytes_not_eos():
  docs = _docs(20)
  _, rows = _rows(docs, lanes=1, seq_len=16, steps=30)
  targets = rows[0]["targets"]
  np.testing.assert_array_equal(rows[0]["bytes"], (targets != EOS).astype(np.float32))


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
