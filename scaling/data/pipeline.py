"""The dataset the trainer uses: a checkpointable grain stream of shuffled packed sequences and a fixed validation set.

The training split is one token stream (`packing.TokenStream`) cut into sequences of seq_len targets.
Every epoch visits all of them in a seeded global permutation (`SequenceOrder`); global batch s holds
the permuted sequences s*B .. s*B + B - 1, so consecutive rows are independent draws rather than the
continuation of one document. Batches are a pure function of the step: process p builds only rows
[p*B/P, (p+1)*B/P), and the iterator's state is the step.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import functools
import math
import weakref
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from scaling.data import index
from scaling.data import packing
from scaling.data.tokenizers import Tokenizer
from scaling.errors import UserError

STATE_VERSION = 2
_OPEN_ITERATORS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_iterators() -> None:
  """Stops prefetch threads before interpreter teardown; grain's own close in `__del__` then fails noisily."""
  for iterator in list(_OPEN_ITERATORS):
    iterator.close()
    iterator.close = lambda: None


class TextView(Sequence[bytes]):
  """Read-only view of one text field of a random-access source, as UTF-8 bytes."""

  def __init__(self, source: Any, field: str):
    self._source = source
    self._field = field

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, position: int) -> bytes:
    value = self._source[position][self._field]
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)

  def __iter__(self) -> Iterator[bytes]:
    return (self[i] for i in range(len(self)))


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """What determines a training stream; a saved iterator state only restores into the same spec."""

  seq_len: int
  global_batch: int
  seed: int
  process_index: int
  process_count: int
  boundaries: str
  unique_tokens: int | None = None

  def rows(self) -> range:
    """Returns the rows of the global batch this process produces."""
    share = self.global_batch // self.process_count
    return range(self.process_index * share, (self.process_index + 1) * share)


@dataclasses.dataclass(frozen=True)
class SequenceOrder:
  """Maps a global row position (step * B + row) to a sequence of the split: a fresh permutation per epoch.

  With `unique` sequences, the run's set is the first `unique` of the seed's epoch-0 permutation (a random
  subset spread over the corpus); epoch 0 visits it in that order, later epochs in a fresh permutation.
  """

  num_sequences: int
  seed: int
  unique: int | None = None

  def sequence(self, position: int) -> int:
    """Returns the sequence index that global row `position` reads."""
    if self.unique is None:
      epoch, offset = divmod(position, self.num_sequences)
      return packing.shuffle(offset, self.num_sequences, self.seed, epoch)
    epoch, offset = divmod(position, self.unique)
    if epoch:
      offset = packing.shuffle(offset, self.unique, self.seed, epoch, salt="unique")
    return packing.shuffle(offset, self.num_sequences, self.seed, 0)


class PackedBatches(grain.IterDataset):
  """Endless packed batches of this process's rows, read from a split's token stream in a global shuffle."""

  def __init__(self, stream: packing.TokenStream, tokenizer: Tokenizer, spec: StreamSpec, read_threads: int = 0):
    super().__init__()
    self._stream = stream
    self._tokenizer = tokenizer
    self._spec = spec
    self._read_threads = read_threads

  def __iter__(self) -> PackedBatchIterator:
    return PackedBatchIterator(self._stream, self._tokenizer, self._spec, self._read_threads)


class PackedBatchIterator(grain.DatasetIterator):
  """Iterator over packed batches whose state is the step (with the spec and stream length it belongs to).

  With read_threads > 0 the rows of a batch are read and tokenized in a thread pool, which hides the
  latency of remote storage; which rows come out does not depend on it.
  """

  def __init__(self, stream: packing.TokenStream, tokenizer: Tokenizer, spec: StreamSpec, read_threads: int = 0):
    super().__init__()
    self._stream = stream
    self._tokenizer = tokenizer
    self._spec = spec
    unique = None if spec.unique_tokens is None else plan_unique(spec.unique_tokens, spec.seq_len)[0]
    self._order = SequenceOrder(stream.num_sequences(spec.seq_len), spec.seed, unique)
    self._executor = concurrent.futures.ThreadPoolExecutor(read_threads) if read_threads > 0 else None
    self._step = 0

  def __next__(self) -> dict[str, np.ndarray]:
    positions = [self._step * self._spec.global_batch + r for r in self._spec.rows()]
    sequences = [self._order.sequence(p) for p in positions]
    rows = pack_stream_sequences(self._stream, self._tokenizer, sequences, self._spec.seq_len, self._spec.boundaries,
                                 self._executor)
    self._step += 1
    return rows

  def _identity(self) -> dict[str, Any]:
    return {"spec": dataclasses.asdict(self._spec), "stream_tokens": self._stream.num_tokens}

  def get_state(self) -> dict[str, Any]:
    return {"version": STATE_VERSION, "step": self._step, **self._identity()}

  def set_state(self, state: dict[str, Any]) -> None:
    saved = {k: state.get(k) for k in ("spec", "stream_tokens")}
    if state.get("version") != STATE_VERSION or saved != self._identity():
      raise UserError(f"data iterator state was saved for {saved} (version {state.get('version')}), "
                      f"not {self._identity()} (version {STATE_VERSION})")
    self._step = int(state["step"])


def pack_stream_sequences(stream: packing.TokenStream, tokenizer: Tokenizer, sequences: Sequence[int],
                          seq_len: int, boundaries: str,
                          executor: concurrent.futures.Executor | None = None) -> dict[str, np.ndarray]:
  """Returns the packed rows [len(sequences), seq_len] of a stream's sequences, padding any cut short at its end."""
  read = functools.partial(stream.sequence, seq_len=seq_len)
  pieces = list(executor.map(read, sequences) if executor else map(read, sequences))
  width = seq_len + 1
  tokens = np.full((len(pieces), width), tokenizer.pad_id, np.int32)
  units = np.zeros((len(pieces), width), np.int64)
  offsets = np.zeros((len(pieces), width), np.int64)
  for row, (piece_tokens, piece_units, piece_offsets) in enumerate(pieces):
    tokens[row, :len(piece_tokens)] = piece_tokens
    units[row, :len(piece_units)] = piece_units
    offsets[row, :len(piece_offsets)] = piece_offsets
  valid = np.arange(seq_len) < np.array([len(p[0]) - 1 for p in pieces], np.int64).reshape(-1, 1)
  return packing.pack_sequences(tokens, units, offsets, valid, boundaries=boundaries,
                                token_bytes=tokenizer.token_bytes, pad_id=tokenizer.pad_id)


def make_stream(texts: Sequence[bytes], tokenizer: Tokenizer,
                split_index: index.SplitIndex | None = None) -> packing.TokenStream:
  """Returns the token stream of a split, building its index in memory unless given."""
  if split_index is None:
    split_index = index.build(texts, tokenizer)
  return packing.TokenStream(texts, tokenizer.encode, tokenizer.eos_id, split_index.starts,
                             tokens=split_index.tokens)


def check_sharding(batch: int, process_index: int, process_count: int, what: str) -> None:
  """Raises UserError unless the batch splits evenly across processes and the index is in range."""
  if batch <= 0 or process_count <= 0 or batch % process_count:
    raise UserError(f"{what} = {batch} must be a positive multiple of the process count {process_count}")
  if not 0 <= process_index < process_count:
    raise UserError(f"process_index {process_index} is outside [0, {process_count})")


def train_batches(stream: packing.TokenStream, tokenizer: Tokenizer, spec: StreamSpec, prefetch: int,
                  read_threads: int = 0, name: str = "the dataset") -> grain.DatasetIterator:
  """Returns the checkpointable iterator of training batches, prefetched in a background thread."""
  check_sharding(spec.global_batch, spec.process_index, spec.process_count, "global_batch")
  if spec.seq_len <= 0:
    raise UserError(f"seq_len = {spec.seq_len} must be positive")
  available = stream.num_sequences(spec.seq_len)
  if available == 0:
    raise UserError(f"the training split of {name} holds {stream.num_tokens} tokens, not one sequence of "
                    f"seq_len = {spec.seq_len}")
  check_unique_tokens(spec.unique_tokens, spec.seq_len, stream, name)
  ds = PackedBatches(stream, tokenizer, spec, read_threads)
  if prefetch > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
  iterator = iter(ds)
  _OPEN_ITERATORS.add(iterator)
  return iterator


def eval_sequences(num_sequences: int, count: int) -> np.ndarray:
  """Returns `count` distinct sequence indices spread evenly over range(num_sequences): the fixed eval sample."""
  return (np.arange(count, dtype=np.int64) * num_sequences) // count


def check_unique_tokens(unique_tokens: int | None, seq_len: int, stream: packing.TokenStream, name: str) -> None:
  """Raises a UserError naming train.unique_tokens when its whole sequences exceed the training split's."""
  available = stream.num_sequences(seq_len)
  if unique_tokens is not None and plan_unique(unique_tokens, seq_len)[0] > available:
    raise UserError(f"train.unique_tokens = {unique_tokens} exceeds the {available * seq_len} tokens of the "
                    f"training split of {name} ({available} sequences of {seq_len})")


def check_eval_tokens(num_tokens: int, seq_len: int, stream: packing.TokenStream, name: str) -> None:
  """Raises a UserError naming train.eval_tokens when the validation split holds fewer whole-sequence tokens."""
  if num_tokens <= 0:
    raise UserError(f"train.eval_tokens = {num_tokens} must be positive")
  available = stream.num_sequences(seq_len) * seq_len
  if num_tokens > available:
    raise UserError(f"train.eval_tokens = {num_tokens} exceeds the validation split of {name}: it holds "
                    f"{max(stream.num_tokens - 1, 0)} tokens, {available} of them in whole sequences of {seq_len}")


def validation_batches(stream: packing.TokenStream, tokenizer: Tokenizer, *, seq_len: int, batch_size: int,
                       num_tokens: int | None, process_index: int, process_count: int, boundaries: str,
                       name: str) -> list[dict[str, np.ndarray]]:
  """Returns this process's rows of the fixed validation batches (the last one padded, weight 0).

  With num_tokens, the set is ceil(num_tokens / seq_len) sequences spread evenly over the validation
  stream, the last one weighted only up to num_tokens targets; without, the whole stream in order.
  """
  check_sharding(batch_size, process_index, process_count, "batch_size")
  if seq_len <= 0:
    raise UserError(f"seq_len = {seq_len} must be positive")
  if num_tokens is None:
    sequences = np.arange(math.ceil(max(stream.num_tokens - 1, 0) / seq_len))
    if len(sequences) == 0:
      raise UserError(f"the validation split of {name} has no tokens")
  else:
    check_eval_tokens(num_tokens, seq_len, stream, name)
    sequences = eval_sequences(stream.num_sequences(seq_len), math.ceil(num_tokens / seq_len))
  rows = pack_stream_sequences(stream, tokenizer, [int(k) for k in sequences], seq_len, boundaries)
  if num_tokens is not None:
    _drop_targets_after(rows, num_tokens)
  num_batches = math.ceil(len(sequences) / batch_size)
  padding = packing.pack_rows(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64), seq_len=seq_len,
                              num_rows=num_batches * batch_size - len(sequences), boundaries=boundaries,
                              token_bytes=tokenizer.token_bytes, pad_id=tokenizer.pad_id)
  rows = packing.stack_rows([rows, padding])
  share = batch_size // process_count
  return [{k: v[b * batch_size + process_index * share:b * batch_size + (process_index + 1) * share]
           for k, v in rows.items()} for b in range(num_batches)]


def _drop_targets_after(rows: dict[str, np.ndarray], num_tokens: int) -> None:
  """Zeroes the weights and bytes of every target after the first num_tokens (row-major), in place."""
  keep = (np.arange(rows["weights"].size) < num_tokens).reshape(rows["weights"].shape)
  rows["weights"] *= keep
  rows["bytes"] *= keep


def _whole_steps(tokens: int, global_batch: int, seq_len: int, knob: str) -> tuple[int, int, int]:
  """Returns (steps, tokens_actual, rounding) for the fewest whole steps whose tokens reach `tokens`."""
  if tokens <= 0 or global_batch <= 0 or seq_len <= 0:
    raise UserError(f"{knob} = {tokens}, global_batch = {global_batch} and seq_len = {seq_len} must be positive")
  per_step = global_batch * seq_len
  steps = -(-tokens // per_step)
  return steps, steps * per_step, steps * per_step - tokens


def plan_steps(tokens: int, global_batch: int, seq_len: int) -> tuple[int, int, int]:
  """Returns (steps, tokens_actual, rounding) for a token budget: the fewest whole steps that reach it.

  tokens_actual = steps * global_batch * seq_len >= tokens and 0 <= rounding < one batch of tokens;
  the trainer records tokens_actual and rounding in run.json.
  """
  return _whole_steps(tokens, global_batch, seq_len, "train.tokens")


def plan_unique(unique_tokens: int, seq_len: int) -> tuple[int, int, int]:
  """Returns (sequences, unique_actual, rounding) for a unique-token budget, rounded up to whole sequences."""
  return _whole_steps(unique_tokens, 1, seq_len, "unique_tokens")


def epochs(tokens: int, unique_tokens: int | None, global_batch: int, seq_len: int,
           train_tokens: int | None) -> float | None:
  """Returns how many passes a run of `tokens` makes over its data (None when the split size is unknown)."""
  tokens_actual = plan_steps(tokens, global_batch, seq_len)[1]
  if unique_tokens is not None:
    return tokens_actual / plan_unique(unique_tokens, seq_len)[1]
  return tokens_actual / train_tokens if train_tokens else None
