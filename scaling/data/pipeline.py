"""The dataset the trainer uses: a checkpointable grain stream of packed batches and a fixed validation set.

Batches are built from `global_batch` lanes: row r of every batch packs the documents at shuffled
positions r, r + B, r + 2B, ... (epoch after epoch, each with a fresh permutation). A process reads only
its own lanes, so process p yields rows [p*B/P, (p+1)*B/P) of what a single process would, and the
iterator's state is just each lane's cursor.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import math
import weakref
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from scaling.data import packing
from scaling.data.tokenizers import Tokenizer
from scaling.errors import UserError

STATE_VERSION = 1
READ_AHEAD = 2  # documents each lane reads ahead when data.read_threads > 0
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

  def __getitem__(self, index: int) -> bytes:
    value = self._source[index][self._field]
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

  def lanes(self) -> range:
    """Returns the rows of the global batch this process produces."""
    share = self.global_batch // self.process_count
    return range(self.process_index * share, (self.process_index + 1) * share)


class PackedBatches(grain.IterDataset):
  """Endless packed batches of this process's lanes."""

  def __init__(self, texts: Sequence[bytes], tokenizer: Tokenizer, spec: StreamSpec, read_threads: int = 0):
    super().__init__()
    self._texts = texts
    self._tokenizer = tokenizer
    self._spec = spec
    self._read_threads = read_threads

  def __iter__(self) -> PackedBatchIterator:
    stream = packing.DocumentStream(self._texts, self._tokenizer.encode, self._tokenizer.eos_id, self._spec.seed)
    return PackedBatchIterator(stream, self._tokenizer, self._spec, self._read_threads)


class PackedBatchIterator(grain.DatasetIterator):
  """Iterator over packed batches whose state is the step and every lane's (unit, offset) cursor.

  With unique_tokens, each lane's first steps_per_epoch rows are located once (a table of unit starts),
  and step s reads row s of the first epoch, then rows in a fresh permutation of steps every epoch.
  """

  def __init__(self, stream: packing.DocumentStream, tokenizer: Tokenizer, spec: StreamSpec, read_threads: int = 0):
    super().__init__()
    self._stream = stream
    self._tokenizer = tokenizer
    self._spec = spec
    self._step = 0
    executor = concurrent.futures.ThreadPoolExecutor(read_threads) if read_threads > 0 else None
    self._lanes = [packing.Lane(stream, first=r, stride=spec.global_batch, executor=executor, read_ahead=READ_AHEAD)
                   for r in spec.lanes()]
    self._unit_starts = None
    if spec.unique_tokens is not None:
      self._steps_per_epoch = plan_unique(spec.unique_tokens, spec.global_batch, spec.seq_len)[0]
      need = self._steps_per_epoch * spec.seq_len + 1
      self._unit_starts = [np.concatenate([[0], np.cumsum(lane.unit_lengths(need))]) for lane in self._lanes]

  def __next__(self) -> dict[str, np.ndarray]:
    if self._unit_starts is not None:
      self._seek_unique_row(self._unique_row(self._step))
    rows = [self._row(lane) for lane in self._lanes]
    self._step += 1
    return packing.stack_rows(rows)

  def _unique_row(self, step: int) -> int:
    """Maps a step to the row of the unique set it reads: in order first, then permuted per epoch."""
    epoch, index = divmod(step, self._steps_per_epoch)
    if epoch == 0 or self._steps_per_epoch == 1:
      return index
    seed = packing.epoch_seed(self._spec.seed, epoch, salt="unique-steps")
    return int(packing.index_shuffle(index, max_index=self._steps_per_epoch - 1, seed=seed, rounds=4))

  def _seek_unique_row(self, row: int) -> None:
    position = row * self._spec.seq_len
    for lane, starts in zip(self._lanes, self._unit_starts):
      lane.unit = int(np.searchsorted(starts, position, side="right") - 1)
      lane.offset = int(position - starts[lane.unit])

  def _row(self, lane: packing.Lane) -> dict[str, np.ndarray]:
    tokens, units, offsets = lane.next_row(self._spec.seq_len)
    return packing.pack_rows(tokens, units, offsets, seq_len=self._spec.seq_len, num_rows=1,
                             boundaries=self._spec.boundaries, token_bytes=self._tokenizer.token_bytes,
                             pad_id=self._tokenizer.pad_id)

  def get_state(self) -> dict[str, Any]:
    return {"version": STATE_VERSION, "step": self._step, "spec": dataclasses.asdict(self._spec),
            "lanes": [[lane.unit, lane.offset] for lane in self._lanes]}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("spec") != dataclasses.asdict(self._spec):
      raise UserError(f"data iterator state was saved for {state.get('spec')}, not {dataclasses.asdict(self._spec)}")
    self._step = int(state["step"])
    for lane, (unit, offset) in zip(self._lanes, state["lanes"], strict=True):
      lane.unit, lane.offset = int(unit), int(offset)


def check_sharding(batch: int, process_index: int, process_count: int, what: str) -> None:
  """Raises UserError unless the batch splits evenly across processes and the index is in range."""
  if batch <= 0 or process_count <= 0 or batch % process_count:
    raise UserError(f"{what} = {batch} must be a positive multiple of the process count {process_count}")
  if not 0 <= process_index < process_count:
    raise UserError(f"process_index {process_index} is outside [0, {process_count})")


def train_batches(texts: Sequence[bytes], tokenizer: Tokenizer, spec: StreamSpec, prefetch: int,
                  read_threads: int = 0) -> grain.DatasetIterator:
  """Returns the checkpointable iterator of training batches, prefetched in a background thread."""
  check_sharding(spec.global_batch, spec.process_index, spec.process_count, "global_batch")
  if spec.seq_len <= 0:
    raise UserError(f"seq_len = {spec.seq_len} must be positive")
  if len(texts) == 0:
    raise UserError("the training split has no documents")
  ds = PackedBatches(texts, tokenizer, spec, read_threads)
  if prefetch > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
  iterator = iter(ds)
  _OPEN_ITERATORS.add(iterator)
  return iterator


def validation_stream(texts: Sequence[bytes], tokenizer: Tokenizer, num_tokens: int | None,
                      name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns the first num_tokens + 1 stream tokens of the validation documents in stored order."""
  pieces, total = [], 0
  stream = packing.DocumentStream(texts, tokenizer.encode, tokenizer.eos_id, seed=None)
  for position in range(len(texts)):
    if num_tokens is not None and total > num_tokens:
      break
    unit = stream.unit(position)
    pieces.append(unit)
    total += len(unit)
  available = total - 1
  if num_tokens is None:
    num_tokens = available
  if available < num_tokens or available <= 0:
    raise UserError(f"the validation split of {name} has {max(available, 0)} tokens, fewer than the "
                    f"{num_tokens} asked for")
  units = np.concatenate([np.full(len(p), i) for i, p in enumerate(pieces)])[:num_tokens + 1]
  offsets = np.concatenate([np.arange(len(p)) for p in pieces])[:num_tokens + 1]
  return np.concatenate(pieces)[:num_tokens + 1], units, offsets


def validation_batches(texts: Sequence[bytes], tokenizer: Tokenizer, *, seq_len: int, batch_size: int,
                       num_tokens: int | None, process_index: int, process_count: int, boundaries: str,
                       name: str) -> list[dict[str, np.ndarray]]:
  """Returns this process's rows of the fixed validation batches (the last one padded, weight 0)."""
  check_sharding(batch_size, process_index, process_count, "batch_size")
  tokens, units, offsets = validation_stream(texts, tokenizer, num_tokens, name)
  num_batches = math.ceil(math.ceil((len(tokens) - 1) / seq_len) / batch_size)
  rows = packing.pack_rows(tokens, units, offsets, seq_len=seq_len, num_rows=num_batches * batch_size,
                           boundaries=boundaries, token_bytes=tokenizer.token_bytes, pad_id=tokenizer.pad_id)
  share = batch_size // process_count
  return [{k: v[b * batch_size + process_index * share:b * batch_size + (process_index + 1) * share]
           for k, v in rows.items()} for b in range(num_batches)]


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


def plan_unique(unique_tokens: int, global_batch: int, seq_len: int) -> tuple[int, int, int]:
  """Returns (steps_per_epoch, unique_actual, rounding) for a unique-token budget, rounded up to whole steps."""
  return _whole_steps(unique_tokens, global_batch, seq_len, "unique_tokens")


def epochs(tokens: int, unique_tokens: int | None, global_batch: int, seq_len: int,
           train_tokens: int | None) -> float | None:
  """Returns how many passes a run of `tokens` makes over its data (None when the split size is unknown)."""
  tokens_actual = plan_steps(tokens, global_batch, seq_len)[1]
  if unique_tokens is not None:
    return tokens_actual / plan_unique(unique_tokens, global_batch, seq_len)[1]
  return tokens_actual / train_tokens if train_tokens else None
