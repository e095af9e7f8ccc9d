"""Packing documents into fixed-length sequences of next-token pairs, with document boundaries.

A split's stream is the concatenation of its units, one per document in stored order: `[EOS] +
tokens(document)`. Sequence k covers stream positions [k*L, k*L + L]: inputs are the first L tokens,
targets the last L, and adjacent sequences share one boundary token. So every token except the stream's
first EOS (and a final tail shorter than L) is a target of exactly one sequence, and the EOS that opens
a unit is both the previous document's end (as a target) and the next one's start (as an input). A pair
belongs to the document of its input token. Sequences straddle documents; any sequence can be read
directly (`TokenStream`), which is what lets training draw them in a global shuffle.

Boundaries are either "segments" (segment ids number the documents in a row from 1, positions restart
at 0 at every document and row start, so the model masks attention across documents) or "eos"
(one segment per row, positions 0..L-1, documents separated only by EOS).
"""

from __future__ import annotations

import collections
import hashlib
import threading
from typing import Callable, Sequence

import numpy as np

from grain.experimental import index_shuffle

BOUNDARIES = ("segments", "eos")
FIELDS = ("inputs", "targets", "weights", "segment_ids", "positions", "bytes")
CACHE_BYTES = 256 << 20  # recently read units kept per stream


def epoch_seed(seed: int, epoch: int, salt: str = "sequences") -> int:
  """Derives an independent 32-bit shuffle seed for each (seed, epoch, purpose)."""
  return int.from_bytes(hashlib.sha256(f"{salt}/{seed}/{epoch}".encode()).digest()[:4], "little")


def shuffle(index: int, size: int, seed: int, epoch: int, salt: str = "sequences") -> int:
  """Returns the position of `index` in a seeded permutation of range(size), a fresh one per epoch and salt."""
  if size <= 1:
    return index
  return int(index_shuffle(index, max_index=size - 1, seed=epoch_seed(seed, epoch, salt), rounds=4))


class TokenStream:
  """Random access to a split's token stream: its units ([EOS] + tokens) concatenated in stored order.

  `starts` is the split's token-length index (see `index.py`). With `tokens` (the whole stream, e.g. mapped
  from the index's cache) reads are slices; otherwise documents are read and encoded on demand, recently
  used units cached up to `cache_bytes` so sequences of a long document do not re-read it.
  """

  def __init__(self, texts: Sequence[bytes], encode: Callable[[bytes], np.ndarray], eos_id: int,
               starts: np.ndarray, cache_bytes: int = CACHE_BYTES, tokens: np.ndarray | None = None):
    if len(starts) != len(texts) + 1:
      raise ValueError(f"token index has {len(starts) - 1} documents, the split {len(texts)}")
    if tokens is not None and len(tokens) != starts[-1]:
      raise ValueError(f"token stream has {len(tokens)} tokens, the token index {starts[-1]}")
    self._texts = texts
    self._encode = encode
    self._eos = np.array([eos_id], np.int32)
    self.starts = np.asarray(starts, np.int64)
    self._tokens = tokens
    self._cache_bytes = cache_bytes
    self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
    self._cached_bytes = 0
    self._lock = threading.Lock()

  @property
  def num_tokens(self) -> int:
    """Returns the stream's length in tokens."""
    return int(self.starts[-1])

  def num_sequences(self, seq_len: int) -> int:
    """Returns how many whole sequences of seq_len targets (seq_len + 1 tokens, sharing one) the stream holds."""
    return max(self.num_tokens - 1, 0) // seq_len

  def unit(self, document: int) -> np.ndarray:
    """Returns [EOS] + the tokens of one document, from the cache when recently used."""
    with self._lock:
      cached = self._cache.get(document)
      if cached is not None:
        self._cache.move_to_end(document)
        return cached
    unit = compact(np.concatenate([self._eos, self._encode(self._texts[document])]))
    expected = self.starts[document + 1] - self.starts[document]
    if len(unit) != expected:
      raise ValueError(f"document {document} has {len(unit)} tokens, the token index says {expected}")
    with self._lock:
      if document not in self._cache:
        self._cache[document] = unit
        self._cached_bytes += unit.nbytes
      while self._cached_bytes > self._cache_bytes and len(self._cache) > 1:
        self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
    return unit

  def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns stream tokens [start, stop) with each token's document number and offset in its unit."""
    if self._tokens is not None:
      positions = np.arange(start, stop, dtype=np.int64)
      documents = np.searchsorted(self.starts, positions, side="right") - 1
      return np.asarray(self._tokens[start:stop], np.int32), documents, positions - self.starts[documents]
    first = int(np.searchsorted(self.starts, start, side="right") - 1)
    last = int(np.searchsorted(self.starts, stop - 1, side="right") - 1)
    tokens, units, offsets = [], [], []
    for document in range(first, last + 1):
      begin = self.starts[document]
      lo, hi = max(start - begin, 0), min(stop - begin, self.starts[document + 1] - begin)
      tokens.append(self.unit(document)[lo:hi])
      units.append(np.full(hi - lo, document, np.int64))
      offsets.append(np.arange(lo, hi, dtype=np.int64))
    return np.concatenate(tokens).astype(np.int32), np.concatenate(units), np.concatenate(offsets)

  def sequence(self, index: int, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns the seq_len + 1 tokens of sequence `index` (fewer at the stream's end) with units and offsets."""
    start = index * seq_len
    return self.read(start, min(start + seq_len + 1, self.num_tokens))


def compact(tokens: np.ndarray) -> np.ndarray:
  """Returns the tokens in the smallest unsigned dtype that holds them, to cache more of them."""
  if len(tokens) == 0:
    return tokens.astype(np.uint8)
  return tokens.astype(np.min_scalar_type(int(tokens.max())))


def pack_sequences(tokens: np.ndarray, units: np.ndarray, offsets: np.ndarray, valid: np.ndarray, *,
                   boundaries: str, token_bytes: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
  """Packs rows of L + 1 stream tokens (inputs: the first L, targets: the last L) into FIELDS.

  `units` and `offsets` give each token's document and offset in its unit; `valid` [rows, L] marks the real
  pairs (the rest is padding: pad ids, segment 0, weight 0).
  """
  seq_len = tokens.shape[1] - 1
  inputs = np.where(valid, tokens[:, :-1], pad_id).astype(np.int32)
  targets = np.where(valid, tokens[:, 1:], pad_id).astype(np.int32)
  if boundaries == "segments":
    row_units, row_offsets = units[:, :-1], offsets[:, :-1]
    first = row_units[:, :1]
    segment_ids = np.where(valid, row_units - first + 1, 0)
    positions = np.where(valid, np.where(row_units == first, row_offsets - row_offsets[:, :1], row_offsets), 0)
  else:
    segment_ids = valid
    positions = np.where(valid, np.arange(seq_len), 0)
  return {
      "inputs": inputs,
      "targets": targets,
      "weights": valid.astype(np.float32),
      "segment_ids": segment_ids.astype(np.int32),
      "positions": positions.astype(np.int32),
      "bytes": np.where(valid, token_bytes[targets], 0).astype(np.float32),
  }


def pack_rows(tokens: np.ndarray, units: np.ndarray, offsets: np.ndarray, *, seq_len: int,
              num_rows: int, boundaries: str, token_bytes: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
  """Turns a stream piece of up to num_rows*L + 1 tokens into num_rows rows of FIELDS, padding the end."""
  num_pairs = max(len(tokens) - 1, 0)
  if num_pairs > num_rows * seq_len:
    raise ValueError(f"{num_pairs} pairs do not fit {num_rows} rows of {seq_len}")
  window = np.arange(num_rows)[:, None] * seq_len + np.arange(seq_len + 1)
  gather = np.minimum(window, len(tokens))
  valid = window[:, :-1] < num_pairs
  return pack_sequences(np.append(tokens, pad_id)[gather], np.append(units, 0)[gather],
                        np.append(offsets, 0)[gather], valid, boundaries=boundaries, token_bytes=token_bytes,
                        pad_id=pad_id)


def stack_rows(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Concatenates row groups along the batch axis."""
  return {k: np.concatenate([r[k] for r in rows]) for k in FIELDS}
