"""Tokenizers: raw bytes (the default) and SentencePiece models, with an identity for run.json.

Every tokenizer maps a document's bytes to int32 ids and knows how many bytes of text each id
stands for (`token_bytes`), so losses can be reported in bits per byte across tokenizers.
"""

from __future__ import annotations

import hashlib
import io
import pathlib
from typing import Iterable, Iterator, Protocol

import numpy as np

from scaling.errors import UserError


class Tokenizer(Protocol):
  """What the pipeline needs from a tokenizer."""

  vocab_size: int
  eos_id: int
  pad_id: int
  token_bytes: np.ndarray

  def encode(self, text: bytes) -> np.ndarray:
    """Returns the int32 ids of one document, without EOS."""

  def identity(self) -> dict:
    """Returns {"kind", "vocab_size", "hash"} for run.json."""


class ByteTokenizer:
  """One id per UTF-8 byte (0-255), EOS = 256 (ends a document; as an input it starts the next), PAD = 257."""

  vocab_size = 258
  eos_id = 256
  pad_id = 257

  def __init__(self):
    self.token_bytes = np.concatenate([np.ones(256, np.float32), np.zeros(2, np.float32)])

  def encode(self, text: bytes) -> np.ndarray:
    """Returns the bytes of `text` as int32 ids."""
    return np.frombuffer(text, dtype=np.uint8).astype(np.int32)

  def decode(self, ids: np.ndarray) -> bytes:
    """Returns the bytes of the byte ids in `ids`, dropping specials."""
    ids = np.asarray(ids)
    return ids[ids < 256].astype(np.uint8).tobytes()

  def identity(self) -> dict:
    """Returns the identity recorded in run.json."""
    spec = f"bytes:eos={self.eos_id}:pad={self.pad_id}".encode()
    return {"kind": "bytes", "vocab_size": self.vocab_size,
            "hash": hashlib.sha256(spec).hexdigest()[:16]}


def file_hash(path: str | pathlib.Path) -> str:
  """Returns the sha256 of a file's contents (first 16 hex digits)."""
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def check_vocab_size(tokenizer: Tokenizer, expected: int | None, what: str) -> None:
  """Raises UserError when a configured vocab size disagrees with the tokenizer's."""
  if expected is not None and expected != tokenizer.vocab_size:
    raise UserError(f"tokenizer {what} has vocab size {tokenizer.vocab_size}, but data.vocab_size = {expected}")


class SentencePieceTokenizer:
  """A SentencePiece model file; EOS and PAD come from the model (PAD falls back to EOS)."""

  def __init__(self, model_file: str | pathlib.Path):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    path = pathlib.Path(model_file).expanduser()
    if not path.is_file():
      raise UserError(f"tokenizer model file {path} does not exist")
    self._processor = spm.SentencePieceProcessor()
    try:
      self._processor.load(str(path))
    except (OSError, RuntimeError) as e:
      raise UserError(f"tokenizer model file {path} is not a SentencePiece model ({e})") from None
    if self._processor.eos_id() < 0:
      raise UserError(f"tokenizer model file {path} has no EOS piece; train it with `scaling tokenizer train`")
    self.path = path
    self.vocab_size = self._processor.get_piece_size()
    self.eos_id = self._processor.eos_id()
    self.pad_id = self._processor.pad_id() if self._processor.pad_id() >= 0 else self.eos_id
    self.token_bytes = np.array([self._piece_bytes(i) for i in range(self.vocab_size)], np.float32)
    self._hash = file_hash(path)

  def _piece_bytes(self, piece_id: int) -> int:
    """Counts the bytes of text one piece stands for: 1 for a byte piece, 0 for control and unknown."""
    sp = self._processor
    if sp.is_byte(piece_id):
      return 1
    if sp.is_control(piece_id) or sp.is_unknown(piece_id) or sp.is_unused(piece_id):
      return 0
    return len(sp.id_to_piece(piece_id).replace("\u2581", " ").encode("utf-8"))

  def encode(self, text: bytes) -> np.ndarray:
    """Returns the piece ids of a UTF-8 document (invalid bytes replaced)."""
    return np.asarray(self._processor.encode(text.decode("utf-8", "replace")), np.int32)

  def decode(self, ids: np.ndarray) -> bytes:
    """Returns the UTF-8 text of piece ids."""
    return self._processor.decode([int(i) for i in ids]).encode("utf-8")

  def identity(self) -> dict:
    """Returns the identity recorded in run.json."""
    return {"kind": "sentencepiece", "vocab_size": self.vocab_size, "hash": self._hash, "file": str(self.path)}


def take_bytes(texts: Iterable[bytes], max_bytes: int) -> list[bytes]:
  """Returns documents in order until about max_bytes of text have been taken."""
  taken, seen = [], 0
  for text in texts:
    if seen >= max_bytes:
      break
    taken.append(text)
    seen += len(text)
  return taken


def _lines(texts: Iterable[bytes]) -> Iterator[str]:
  """Yields the non-empty lines of documents: SentencePiece trains on lines, not whole files."""
  for text in texts:
    yield from (line for line in text.decode("utf-8", "replace").split("\n") if line.strip())


def train_sentencepiece(texts: Iterable[bytes], out: str | pathlib.Path, *, vocab_size: int,
                        model_type: str) -> pathlib.Path:
  """Trains a byte-fallback SentencePiece model that keeps text exactly (no normalization); writes `out`."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(out).expanduser()
  out.parent.mkdir(parents=True, exist_ok=True)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_lines(texts), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=-1, eos_id=1, pad_id=2, user_defined_symbols=["\n"], minloglevel=2)
  except RuntimeError as e:
    why = str(e).splitlines()[-1].replace(  # our command has --vocab_size but no character coverage knob
        "Increase vocab_size or decrease character_coverage with --character_coverage option.", "Increase --vocab_size.")
    raise UserError(f"SentencePiece training for {out} failed: {why}") from None
  out.write_bytes(model.getvalue())
  return out
