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
              prefetch=2, read_threads=0):
  spec = StreamSpec(seq_len=seq_len, global_batch=global_batch, seed=seed, process_index=process_index,
                    process_count=process_count, boundaries="segments", unique_tokens=unique_tokens)
  return pipeline.train_batches(docs, TOK, spec, prefetch, read_threads)


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
def test_background_reads_do_not_change_the_stream(unique_tokens):
  docs = _docs()
  _assert_same(_take(_iterator(docs, read_threads=3, unique_tokens=unique_tokens), 25),
               _take(_iterator(docs, prefetch=0, unique_tokens=unique_tokens), 25))


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


def test_plan_steps_meets_the_budget_within_one_batch():
  assert pipeline.plan_steps(10_000, 8, 32) == (40, 10_240, 240)
  assert pipeline.plan_steps(8 * 32 * 3, 8, 32) == (3, 768, 0)
  assert pipeline.plan_unique(1000, 8, 32) == (4, 1024, 24)
  assert pipeline.epochs(4 * 1024, 1024, 8, 32, train_tokens=None) == 4.0
  assert pipeline.epochs(2048, None, 8, 32, train_tokens=1024) == 2.0
  with pytest.raises(UserError, match="train.tokens"):
    pipeline.plan_steps(0, 8, 32)


def _validation(docs, seq_len, batch_size, num_tokens=None, process_index=0, process_count=1):
  return pipeline.validation_batches(docs, TOK, seq_len=seq_len, batch_size=batch_size, num_tokens=num_tokens,
                                     process_index=process_index, process_count=process_count,
                                     boundaries="segments", name="test")


def _weighted_targets(batches):
  return np.concatenate([b["targets"][b["weights"] > 0] for b in batches])


def test_validation_tokens_are_the_same_for_any_batch_size_and_sequence_length():
  docs = _docs(20)
  reference = _weighted_targets(_validation(docs, 64, 4))
  assert len(reference) == sum(len(d) + 1 for d in docs) - 1
  for seq_len, batch_size in [(7, 3), (100, 8), (1000, 1)]:
    np.testing.assert_array_equal(_weighted_targets(_validation(docs, seq_len, batch_size)), reference)
  limited = _validation(docs, 50, 4, num_tokens=1234)
  np.testing.assert_array_equal(_weighted_targets(limited), reference[:1234])
  assert sum(b["bytes"].sum() for b in limited) == np.sum(reference[:1234] < 256)


def test_validation_shares_partition_each_batch():
  docs = _docs(20)
  whole = _validation(docs, 40, 4, num_tokens=900)
  shares = [_validation(docs, 40, 4, num_tokens=900, process_index=p, process_count=2) for p in range(2)]
  for i, batch in enumerate(whole):
    for k in batch:
      np.testing.assert_array_equal(np.concatenate([shares[0][i][k], shares[1][i][k]]), batch[k])


def test_asking_for_more_validation_tokens_than_exist_is_a_user_error():
  with pytest.raises(UserError, match="validation split of test has"):
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
