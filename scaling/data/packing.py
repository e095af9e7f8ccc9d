"""Packing documents into fixed-length rows of next-token pairs, with document boundaries.

A stream is a concatenation of units, one per document: `[EOS] + tokens(document)`. Row k of a stream
covers stream positions [k*L, k*L + L]: inputs are the first L tokens, targets the last L. So every
token except the stream's first EOS is a target exactly once, nothing is dropped or repeated, and the
EOS that opens a unit is both the previous document's end (as a target) and the next one's start (as
an input). A pair belongs to the document of its input token.

Boundaries are either "segments" (segment ids number the documents in a row from 1, positions restart
at 0 at every document and row start, so the model masks attention across documents) or "eos"
(one segment per row, positions 0..L-1, documents separated only by EOS).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
from typing import Callable, Sequence

import numpy as np

from grain.experimental import index_shuffle

BOUNDARIES = ("segments", "eos")
FIELDS = ("inputs", "targets", "weights", "segment_ids", "positions", "bytes")


def epoch_seed(seed: int, epoch: int, salt: str = "documents") -> int:
  """Derives an independent 32-bit shuffle seed for each (seed, epoch, purpose)."""
  return int.from_bytes(hashlib.sha256(f"{salt}/{seed}/{epoch}".encode()).digest()[:4], "little")


class DocumentStream:
  """Random access to the units ([EOS] + tokens) of a split, epoch after epoch, in a seeded order."""

  def __init__(self, texts: Sequence[bytes], encode: Callable[[bytes], np.ndarray], eos_id: int,
               seed: int | None):
    self._texts = texts
    self._encode = encode
    self._eos = np.array([eos_id], np.int32)
    self._seed = seed
    self.num_documents = len(texts)

  def document_index(self, position: int) -> int:
    """Maps a stream position (over all epochs) to a document: a fresh permutation per epoch."""
    epoch, index = divmod(position, self.num_documents)
    if self._seed is None or self.num_documents == 1:
      return index
    return int(index_shuffle(index, max_index=self.num_documents - 1,
                             seed=epoch_seed(self._seed, epoch), rounds=4))

  def unit(self, position: int) -> np.ndarray:
    """Returns [EOS] + the tokens of the document at `position`."""
    text = self._texts[self.document_index(position)]
    return np.concatenate([self._eos, self._encode(text)])


class Lane:
  """One row of every batch: reads the stream's units at positions first, first + stride, ... in turn.

  With an executor, the next `read_ahead` units are read and tokenized in the background, which hides
  the latency of remote storage; what a lane yields does not depend on it.
  """

  CACHED_UNITS = 64

  def __init__(self, stream: DocumentStream, first: int, stride: int,
               executor: concurrent.futures.Executor | None = None, read_ahead: int = 0):
    self._stream = stream
    self._first = first
    self._stride = stride
    self._executor = executor
    self._read_ahead = read_ahead if executor else 0
    self._cache: collections.OrderedDict[int, concurrent.futures.Future] = collections.OrderedDict()
    self.unit = 0
    self.offset = 0

  def _fetch(self, unit: int) -> concurrent.futures.Future:
    position = self._first + unit * self._stride
    if self._executor is not None:
      return self._executor.submit(self._stream.unit, position)
    future = concurrent.futures.Future()
    future.set_result(self._stream.unit(position))
    return future

  def _unit_tokens(self, unit: int) -> np.ndarray:
    """Returns the tokens of this lane's unit number `unit`, keeping recent and upcoming ones cached."""
    for ahead in range(unit, unit + 1 + self._read_ahead):
      if ahead not in self._cache:
        self._cache[ahead] = self._fetch(ahead)
    self._cache.move_to_end(unit)
    while len(self._cache) > self.CACHED_UNITS + self._read_ahead:
      self._cache.popitem(last=False)
    return self._cache[unit].result()

  def unit_lengths(self, num_tokens: int) -> np.ndarray:
    """Returns the lengths of this lane's first units, enough to cover num_tokens tokens."""
    lengths, total, unit = [], 0, 0
    while total < num_tokens:
      lengths.append(len(self._unit_tokens(unit)))
      total += lengths[-1]
      unit += 1
    return np.array(lengths, np.int64)

  def read(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns the next n tokens from the cursor, with each token's unit number and offset in its unit."""
    tokens, units, offsets = [], [], []
    unit, offset, need = self.unit, self.offset, n
    while need > 0:
      piece = self._unit_tokens(unit)[offset:offset + need]
      tokens.append(piece)
      units.append(np.full(len(piece), unit, np.int64))
      offsets.append(np.arange(offset, offset + len(piece)))
      need -= len(piece)
      unit, offset = unit + 1, 0
    return np.concatenate(tokens), np.concatenate(units), np.concatenate(offsets)

  def advance(self, n: int) -> None:
    """Moves the cursor n tokens on."""
    while n > 0:
      left = len(self._unit_tokens(self.unit)) - self.offset
      if n < left:
        self.offset += n
        return
      n -= left
      self.unit, self.offset = self.unit + 1, 0

  def next_row(self, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns the L+1 tokens of the next row (with units and offsets) and moves on by L."""
    row = self.read(seq_len + 1)
    self.advance(seq_len)
    return row


def pack_rows(tokens: np.ndarray, units: np.ndarray, offsets: np.ndarray, *, seq_len: int,
              num_rows: int, boundaries: str, token_bytes: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
  """Turns a stream piece of up to num_rows*L + 1 tokens into num_rows rows of FIELDS, padding the end."""
  num_pairs = max(len(tokens) - 1, 0)
  size = num_rows * seq_len
  if num_pairs > size:
    raise ValueError(f"{num_pairs} pairs do not fit {num_rows} rows of {seq_len}")
  valid = np.arange(size) < num_pairs
  inputs = np.full(size, pad_id, np.int32)
  targets = np.full(size, pad_id, np.int32)
  inputs[:num_pairs] = tokens[:num_pairs]
  targets[:num_pairs] = tokens[1:num_pairs + 1]
  if boundaries == "segments":
    segment_ids, positions = _segments(units[:num_pairs], offsets[:num_pairs], seq_len, size)
  else:
    segment_ids = valid.astype(np.int32)
    positions = np.where(valid, np.arange(size) % seq_len, 0).astype(np.int32)
  row = {
      "inputs": inputs,
      "targets": targets,
      "weights": valid.astype(np.float32),
      "segment_ids": segment_ids,
      "positions": positions,
      "bytes": np.where(valid, token_bytes[targets], 0).astype(np.float32),
  }
  return {k: v.reshape(num_rows, seq_len) for k, v in row.items()}


def _segments(units: np.ndarray, offsets: np.ndarray, seq_len: int, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Numbers documents within each row from 1 and restarts positions at each document and row start."""
  n = len(units)
  row_start = np.arange(n) - np.arange(n) % seq_len
  first_unit = units[row_start]
  segment_ids = np.zeros(size, np.int32)
  positions = np.zeros(size, np.int32)
  segment_ids[:n] = units - first_unit + 1
  positions[:n] = np.where(units == first_unit, offsets - offsets[row_start], offsets)
  return segment_ids, positions


def stack_rows(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Concatenates row groups along the batch axis."""
  return {k: np.concatenate([r[k] for r in rows]) for k in FIELDS}
