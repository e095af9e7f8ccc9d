"""The training stream and validation set: determinism, resumption, repetition, sharding and budgets."""

import collections
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scaling.data import index
from scaling.data import pipeline
from scaling.data.pipeline import StreamSpec
from scaling.data.tokenizers import ByteTokenizer
from scaling.errors import UserError

TOK = ByteTokenizer()
REPO = pathlib.Path(__file__).resolve().parents[1]


def _docs(n: int = 60, seed: int = 0) -> list[bytes]:
  rng = np.random.default_rng(seed)
  return [bytes(rng.integers(32, 127, size=int(rng.integers(1, 300)), dtype=np.uint8)) for _ in range(n)]


def _iterator(docs, *, seq_len=32, global_batch=8, seed=0, process_index=0, process_count=1, unique_tokens=None,
              prefetch=2, read_threads=0, mapped=True):
  spec = StreamSpec(seq_len=seq_len, global_batch=global_batch, seed=seed, process_index=process_index,
                    process_count=process_count, boundaries="segments", unique_tokens=unique_tokens)
  split_index = index.build(docs, TOK, max_stream_bytes=None if mapped else 0)
  return pipeline.train_batches(pipeline.make_stream(docs, TOK, split_index), TOK, spec, prefetch, read_threads)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_stream_is_deterministic_and_depends_on_the_seed():
  docs = _docs()
  _assert_same(_take(_iterator(docs, seed=5), 10), _take(_iterator(docs, seed=5), 10))
  assert not np.array_equal(next(_iterator(docs, seed=5))["inputs"], next(_iterator(docs, seed=6))["inputs"])


@pytest.mark.parametrize("unique_tokens", [None, 8 * 32 * 7])
def test_restored_iterator_continues_exactly_like_the_uninterrupted_one(unique_tokens):
  docs = _docs()
  uninterrupted = _take(_iterator(docs, unique_tokens=unique_tokens), 35)
  first = _iterator(docs, unique_tokens=unique_tokens)
  _take(first, 15)
  state = json.loads(json.dumps(first.get_state()))
  resumed = _iterator(docs, unique_tokens=unique_tokens)
  resumed.set_state(state)
  _assert_same(_take(resumed, 20), uninterrupted[15:35])


@pytest.mark.parametrize("unique_tokens", [None, 8 * 32 * 5])
def test_background_reads_and_reading_documents_do_not_change_the_stream(unique_tokens):
  docs = _docs()
  reference = _take(_iterator(docs, prefetch=0, unique_tokens=unique_tokens), 25)
  _assert_same(_take(_iterator(docs, read_threads=3, unique_tokens=unique_tokens, mapped=False), 25), reference)
  _assert_same(_take(_iterator(docs, read_threads=3, unique_tokens=unique_tokens), 25), reference)


def test_batch_s_holds_the_permuted_sequences_s_times_b_to_s_times_b_plus_b_across_epochs():
  docs, seq_len, batch = _docs(), 32, 8
  stream = np.concatenate([[TOK.eos_id, *d] for d in docs])
  num_sequences = (len(stream) - 1) // seq_len
  order = pipeline.SequenceOrder(num_sequences, seed=2)
  steps = 2 * num_sequences // batch + 1
  batches = _take(_iterator(docs, seed=2, prefetch=0), steps)
  drawn = []
  for s, b in enumerate(batches):
    for r in range(batch):
      k = order.sequence(s * batch + r)
      np.testing.assert_array_equal(b["inputs"][r], stream[k * seq_len:(k + 1) * seq_len])
      np.testing.assert_array_equal(b["targets"][r], stream[k * seq_len + 1:(k + 1) * seq_len + 1])
      drawn.append(k)
  assert sorted(drawn[:num_sequences]) == sorted(drawn[num_sequences:2 * num_sequences]) == list(range(num_sequences))
  assert drawn[:num_sequences] != drawn[num_sequences:2 * num_sequences]


def test_the_state_is_the_step_and_restores_across_an_epoch_boundary():
  docs = _docs()
  epoch_steps = sum(len(d) + 1 for d in docs) // 32 // 8
  uninterrupted = _take(_iterator(docs), epoch_steps + 3)
  first = _iterator(docs)
  _take(first, epoch_steps - 1)
  state = first.get_state()
  assert state["step"] == epoch_steps - 1 and set(state) == {"version", "step", "spec", "stream_tokens"}
  resumed = _iterator(docs, read_threads=2)
  resumed.set_state(json.loads(json.dumps(state)))
  _assert_same(_take(resumed, 4), uninterrupted[epoch_steps - 1:])


def test_restoring_a_state_of_another_corpus_is_a_user_error():
  state = _iterator(_docs(seed=0)).get_state()
  with pytest.raises(UserError, match="state was saved for"):
    _iterator(_docs(seed=1)).set_state(state)


def test_restoring_a_state_of_another_stream_is_a_user_error():
  docs = _docs()
  state = _iterator(docs, seq_len=32).get_state()
  with pytest.raises(UserError, match="state was saved for"):
    _iterator(docs, seq_len=64).set_state(state)


def test_process_shares_are_disjoint_rows_whose_union_is_the_single_process_batch():
  docs = _docs()
  whole = _take(_iterator(docs, global_batch=8), 5)
  shares = [_take(_iterator(docs, global_batch=8, process_index=p, process_count=4), 5) for p in range(4)]
  for step, batch in enumerate(whole):
    for k in batch:
      np.testing.assert_array_equal(np.concatenate([s[step][k] for s in shares]), batch[k])


def test_with_a_quarter_of_the_tokens_unique_every_sequence_is_seen_exactly_four_times():
  docs, per_step = _docs(), 8 * 32
  unique_steps = 6
  batches = _take(_iterator(docs, unique_tokens=unique_steps * per_step), 4 * unique_steps)
  counts = collections.Counter(row.tobytes() for b in batches for row in b["inputs"])
  assert len(counts) == unique_steps * 8 and set(counts.values()) == {4}
  _assert_same(batches[:unique_steps], _take(_iterator(docs), unique_steps))
  orders = [[b["inputs"].tobytes() for b in batches[e * unique_steps:(e + 1) * unique_steps]] for e in range(4)]
  assert len({tuple(o) for o in orders}) > 1


def test_a_unique_set_that_is_not_a_whole_number_of_batches_is_still_seen_once_per_epoch():
  docs = _docs()
  unique = 13
  batches = _take(_iterator(docs, unique_tokens=unique * 32 - 5), 3 * unique)
  rows = [row.tobytes() for b in batches for row in b["inputs"]]
  for epoch in range(len(rows) // unique):
    assert len(set(rows[epoch * unique:(epoch + 1) * unique])) == unique
    assert set(rows[epoch * unique:(epoch + 1) * unique]) == set(rows[:unique])


def test_the_unique_set_is_a_random_subset_spread_over_the_split_not_its_first_documents():
  order = pipeline.SequenceOrder(num_sequences=10_000, seed=3, unique=100)
  chosen = [order.sequence(p) for p in range(100)]
  assert len(set(chosen)) == 100 and max(chosen) > 9_000 and min(chosen) < 1_000
  assert sorted(chosen) == sorted(order.sequence(p) for p in range(100, 200))
  assert chosen == [pipeline.SequenceOrder(10_000, seed=3).sequence(p) for p in range(100)]
  assert chosen != [pipeline.SequenceOrder(10_000, seed=4, unique=100).sequence(p) for p in range(100)]


def test_each_epoch_draws_every_sequence_once_in_a_fresh_order():
  order = pipeline.SequenceOrder(num_sequences=500, seed=0)
  epochs = [[order.sequence(e * 500 + j) for j in range(500)] for e in range(3)]
  assert all(sorted(e) == list(range(500)) for e in epochs)
  assert epochs[0] != epochs[1] != epochs[2]


def _stream_positions(docs: list[bytes], batches: list[dict]) -> list[list[int]]:
  """Finds where each row's inputs start in the split's stream (EOS written as NUL), by content."""
  stream = b"".join(b"\0" + d for d in docs)
  found = []
  for batch in batches:
    rows = np.where(batch["inputs"] == TOK.eos_id, 0, batch["inputs"]).astype(np.uint8)
    found.append([stream.find(row.tobytes()) for row in rows])
  return found


def test_consecutive_batches_share_documents_no_more_often_than_two_random_sequences():
  rng = np.random.default_rng(1)
  sizes = [int(s) for s in rng.integers(1, 60, size=300)] + [4000] * 12
  docs = [bytes(rng.integers(32, 127, size=s, dtype=np.uint8)) for s in sizes]
  seq_len, batch = 32, 8
  starts = np.concatenate([[0], np.cumsum([s + 1 for s in sizes])])
  num_sequences = (starts[-1] - 1) // seq_len
  per_document = np.bincount(np.searchsorted(starts, np.arange(num_sequences) * seq_len, side="right") - 1)
  expected = np.sum(per_document * (per_document - 1)) / (num_sequences * (num_sequences - 1))
  steps = num_sequences // batch - 1
  positions = np.array(_stream_positions(docs, _take(_iterator(docs, seq_len=seq_len, global_batch=batch), steps)))
  documents = np.searchsorted(starts, positions, side="right") - 1
  found = (positions[1:] >= 0) & (positions[:-1] >= 0)
  same = np.mean((documents[1:] == documents[:-1])[found])
  assert 0.05 < expected < 0.3
  assert abs(same - expected) < 0.05, (same, expected)
  assert found.all()


def test_plan_steps_meets_the_budget_within_one_batch():
  assert pipeline.plan_steps(10_000, 8, 32) == (40, 10_240, 240)
  assert pipeline.plan_steps(8 * 32 * 3, 8, 32) == (3, 768, 0)
  assert pipeline.plan_unique(1000, 32) == (32, 1024, 24)
  assert pipeline.epochs(4 * 1024, 1024, 8, 32, train_tokens=None) == 4.0
  assert pipeline.epochs(2048, None, 8, 32, train_tokens=1024) == 2.0
  with pytest.raises(UserError, match="train.tokens"):
    pipeline.plan_steps(0, 8, 32)


def _validation(docs, seq_len, batch_size, num_tokens=None, process_index=0, process_count=1):
  return pipeline.validation_batches(pipeline.make_stream(docs, TOK), TOK, seq_len=seq_len, batch_size=batch_size,
                                     num_tokens=num_tokens, process_index=process_index,
                                     process_count=process_count, boundaries="segments", name="test")


def _weighted_targets(batches):
  return np.concatenate([b["targets"][b["weights"] > 0] for b in batches])


def test_the_whole_validation_split_is_every_target_once_for_any_batch_size_and_sequence_length():
  docs = _docs(20)
  expected = np.concatenate([[*d, TOK.eos_id] for d in docs])[:-1]
  for seq_len, batch_size in [(64, 4), (7, 3), (100, 8), (1000, 1)]:
    np.testing.assert_array_equal(_weighted_targets(_validation(docs, seq_len, batch_size)), expected)


def test_the_eval_sample_is_num_tokens_targets_from_sequences_spread_evenly_over_the_split():
  docs = _docs(40)
  stream = np.concatenate([[TOK.eos_id, *d] for d in docs])
  seq_len, num_tokens = 16, 16 * 9 + 5
  batches = _validation(docs, seq_len, 4, num_tokens=num_tokens)
  assert len(batches) == 3 and sum(b["weights"].sum() for b in batches) == num_tokens
  inputs = np.concatenate([b["inputs"] for b in batches])[:10]
  num_sequences = (len(stream) - 1) // seq_len
  for row, k in zip(inputs, pipeline.eval_sequences(num_sequences, 10)):
    np.testing.assert_array_equal(row, stream[k * seq_len:(k + 1) * seq_len])
  spacing = np.diff(pipeline.eval_sequences(num_sequences, 10))
  assert spacing.min() >= num_sequences // 10 and spacing.max() <= num_sequences // 10 + 1
  for other_batch in (1, 2, 8):
    np.testing.assert_array_equal(_weighted_targets(_validation(docs, seq_len, other_batch, num_tokens=num_tokens)),
                                  _weighted_targets(batches))
  assert sum(b["bytes"].sum() for b in batches) == np.sum(_weighted_targets(batches) < 256)


def test_validation_shares_partition_each_batch():
  docs = _docs(20)
  whole = _validation(docs, 40, 4, num_tokens=900)
  shares = [_validation(docs, 40, 4, num_tokens=900, process_index=p, process_count=2) for p in range(2)]
  for i, batch in enumerate(whole):
    for k in batch:
      np.testing.assert_array_equal(np.concatenate([shares[0][i][k], shares[1][i][k]]), batch[k])


def test_asking_for_more_validation_tokens_than_exist_is_a_user_error_naming_train_eval_tokens():
  with pytest.raises(UserError, match=r"train.eval_tokens = 1000000 exceeds the validation split of test: it holds"):
    _validation(_docs(3), 16, 2, num_tokens=10**6)


_WORKER = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, NamedSharding, PartitionSpec
    from scaling.data import make_dataset
    ds = make_dataset(source="text", files=sys.argv[3], data_dir=sys.argv[4])
    mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    it = ds.train_iterator(seq_len=24, global_batch=6, seed=1, process_index=jax.process_index(),
                           process_count=jax.process_count())
    out = {}
    for step in range(3):
      local = next(it)
      out[f"local{step}"] = local["inputs"]
      global_inputs = jax.make_array_from_process_local_data(sharding, local["inputs"])
      out[f"global{step}"] = multihost_utils.process_allgather(global_inputs, tiled=True)
    np.savez(sys.argv[5], **out)
    """)


def test_two_jax_processes_read_disjoint_shares_whose_union_is_the_single_process_batch(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for i, doc in enumerate(_docs(12)):
    (corpus / f"doc{i}.txt").write_bytes(doc)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}  # one CPU device each
  data_dir = tmp_path / "tfds"
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, f"127.0.0.1:{port}", str(p), str(corpus), str(data_dir),
                             str(tmp_path / f"out{p}.npz")], env=env, stderr=subprocess.PIPE, text=True)
           for p in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
  from scaling.data import make_dataset  # pylint: disable=g-import-not-at-top
  single = make_dataset(source="text", files=str(corpus), data_dir=str(data_dir), prefetch=0)
  expected = _take(single.train_iterator(seq_len=24, global_batch=6, seed=1), 3)
  outs = [np.load(tmp_path / f"out{p}.npz") for p in range(2)]
  for step in range(3):
    local = [o[f"local{step}"] for o in outs]
    assert local[0].shape == (3, 24)
    np.testing.assert_array_equal(np.concatenate(local), expected[step]["inputs"])
    np.testing.assert_array_equal(outs[0][f"global{step}"], expected[step]["inputs"])
    assert not {r.tobytes() for r in local[0]} & {r.tobytes() for r in local[1]}
