"""`make_dataset` (gin: `data`): the one place a run's corpus, splits and tokenizer are chosen."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import gin
import grain
import numpy as np
import tensorflow_datasets as tfds

from scaling.data import catalog
from scaling.data import index
from scaling.data import packing
from scaling.data import pipeline
from scaling.data import preparation
from scaling.data import stdlib_corpus
from scaling.data import text_files
from scaling.data import tokenizers
from scaling.data.packing import BOUNDARIES
from scaling.errors import UserError

SOURCES = ("stdlib", "text", "tfds")
TOKENIZERS = ("bytes", "sentencepiece")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A corpus with its tokenizer: train batches as a checkpointable stream, validation as a fixed list.

  `cache_dir` is the prepared dataset's directory, where the splits' token-length indexes (and token
  streams, where they fit) are cached; without it they are built in memory.
  """

  name: str
  tokenizer: tokenizers.Tokenizer
  train_texts: Sequence[bytes]
  validation_texts: Sequence[bytes]
  boundaries: str = "segments"
  prefetch: int = 2
  read_threads: int = 0
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  cache_dir: str | None = None

  def _stream(self, texts: Sequence[bytes], split: str) -> packing.TokenStream:
    dirs = index.cache_dirs(self.cache_dir, f"{self.name}/{self.info.get('version', '')}")
    split_index = index.load_or_build(texts, self.tokenizer, split, dirs)
    return pipeline.make_stream(texts, self.tokenizer, split_index)

  @functools.cached_property
  def train_stream(self) -> packing.TokenStream:
    """The training split's token stream (its index is built once, then mapped from the cache)."""
    return self._stream(self.train_texts, "train")

  @functools.cached_property
  def validation_stream(self) -> packing.TokenStream:
    """The validation split's token stream."""
    return self._stream(self.validation_texts, "validation")

  def train_iterator(self, seq_len: int, global_batch: int, seed: int = 0, process_index: int = 0,
                     process_count: int = 1, *, unique_tokens: int | None = None) -> grain.DatasetIterator:
    """Returns this process's endless, deterministic stream of [global_batch / process_count, seq_len] batches.

    Batches hold sequences in a seeded global shuffle, a fresh one each epoch. With unique_tokens, a fixed
    random set of ceil(unique_tokens / seq_len) sequences repeats, each epoch in a fresh order.
    """
    spec = pipeline.StreamSpec(seq_len=seq_len, global_batch=global_batch, seed=seed,
                               process_index=process_index, process_count=process_count,
                               boundaries=self.boundaries, unique_tokens=unique_tokens)
    return pipeline.train_batches(self.train_stream, self.tokenizer, spec, self.prefetch, self.read_threads,
                                  name=self.name)

  @property
  def train_tokens(self) -> int:
    """Tokens in one pass over the training split (one EOS plus the document's tokens per document)."""
    return self.train_stream.num_tokens

  @property
  def validation_tokens(self) -> int:
    """Targets the validation split holds: the most `train.eval_tokens` can ask for (less a tail < seq_len)."""
    return max(self.validation_stream.num_tokens - 1, 0)

  def check_unique_tokens(self, unique_tokens: int | None, seq_len: int) -> None:
    """Raises a one-line UserError naming train.unique_tokens when the training split cannot supply it."""
    pipeline.check_unique_tokens(unique_tokens, seq_len, self.train_stream, self.name)

  def check_eval_tokens(self, num_tokens: int, seq_len: int) -> None:
    """Raises a one-line UserError naming train.eval_tokens when the validation split cannot supply it."""
    pipeline.check_eval_tokens(num_tokens, seq_len, self.validation_stream, self.name)

  def epochs(self, tokens: int, seq_len: int, global_batch: int, unique_tokens: int | None = None) -> float:
    """Returns the passes a run of `tokens` makes over its data (D / U with unique_tokens), for run.json."""
    return pipeline.epochs(tokens, unique_tokens, global_batch, seq_len, self.train_tokens)

  def eval_batches(self, seq_len: int, batch_size: int, num_tokens: int | None = None, process_index: int = 0,
                   process_count: int = 1) -> list[dict[str, np.ndarray]]:
    """Returns this process's share of the fixed validation set: num_tokens targets spread over the split."""
    return pipeline.validation_batches(
        self.validation_stream, self.tokenizer, seq_len=seq_len, batch_size=batch_size, num_tokens=num_tokens,
        process_index=process_index, process_count=process_count, boundaries=self.boundaries, name=self.name)


def _splits(builder: tfds.core.DatasetBuilder, train_split: str, validation_split: str,
            text_field: str) -> tuple[Sequence[bytes], Sequence[bytes]]:
  """Returns text views of the train and validation splits of a prepared array_record builder."""
  sources = builder.as_data_source()
  return (pipeline.TextView(sources[train_split], text_field),
          pipeline.TextView(sources[validation_split], text_field))


def _builder_name(builder: tfds.core.DatasetBuilder) -> str:
  config = builder.builder_config.name if builder.builder_config else None
  return "/".join(p for p in (builder.name, config) if p)


def open_source(source: str, data_dir: str, *, files: Any, name: str | None, text_field: str, train_split: str,
                validation_split: str) -> tuple[str, Sequence[bytes], Sequence[bytes], dict[str, Any], str]:
  """Returns (name, train texts, validation texts, info, prepared dir) of the source, preparing local ones once."""
  if source == "stdlib":
    builder, seconds = stdlib_corpus.load(data_dir)
    train_split, validation_split, text_field = "train", "validation", "text"
  elif source == "text":
    if files is None:
      raise UserError("data.source = 'text' needs data.files (a directory, glob or list of .txt/.jsonl files)")
    builder, seconds = text_files.load(files, text_field, data_dir)
    train_split, validation_split, text_field = "train", "validation", "text"
  elif source == "tfds":
    if not name:
      raise UserError("data.source = 'tfds' needs data.name (a TFDS dataset such as 'c4/en' or 'lm1b')")
    builder, seconds = catalog.open_builder(name, data_dir), 0.0
    catalog.check_split(builder, name, train_split, "data.train_split", text_field)
    catalog.check_split(builder, name, validation_split, "data.validation_split", text_field)
  else:
    raise UserError(f"unknown data.source {source!r}; expected one of {', '.join(SOURCES)}")
  train, validation = _splits(builder, train_split, validation_split, text_field)
  info = {"source": source, "data_dir": data_dir, "prepare_s": round(seconds, 3), "version": str(builder.version),
          "splits": {"train": train_split, "validation": validation_split},
          "documents": {"train": len(train), "validation": len(validation)},
          **{k: v for k, v in builder.info.metadata.items() if k != "files"}}
  return _builder_name(builder), train, validation, info, str(builder.data_dir)


def make_tokenizer(kind: str, model_file: str | None, vocab_size: int | None) -> tokenizers.Tokenizer:
  """Builds the configured tokenizer and checks it against an expected vocab size."""
  if kind == "bytes":
    tokenizer = tokenizers.ByteTokenizer()
  elif kind == "sentencepiece":
    if not model_file:
      raise UserError("data.tokenizer = 'sentencepiece' needs data.tokenizer_model (a .model file)")
    tokenizer = tokenizers.SentencePieceTokenizer(model_file)
  else:
    raise UserError(f"unknown data.tokenizer {kind!r}; expected one of {', '.join(TOKENIZERS)}")
  tokenizers.check_vocab_size(tokenizer, vocab_size, model_file or kind)
  return tokenizer


@gin.configurable("data")
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The `data.*` gin knobs: which corpus, which splits and field, which tokenizer, how to pack."""

  source: str = "stdlib"
  data_dir: str | None = None
  files: Any = None
  name: str | None = None
  text_field: str = "text"
  train_split: str = "train"
  validation_split: str = "validation"
  tokenizer: str = "bytes"
  tokenizer_model: str | None = None
  vocab_size: int | None = None
  boundaries: str = "segments"
  prefetch: int = 2
  read_threads: int = 0


def make_dataset(**overrides: Any) -> Dataset:
  """Opens the corpus the `data.*` gin knobs describe (preparing local ones on first use) with its tokenizer.

  Validation happens here, outside the gin-configurable call, so a bad knob is one clean UserError line.
  """
  config = DataConfig(**overrides)
  if config.boundaries not in BOUNDARIES:
    raise UserError(f"unknown data.boundaries {config.boundaries!r}; expected one of {', '.join(BOUNDARIES)}")
  tok = make_tokenizer(config.tokenizer, config.tokenizer_model, config.vocab_size)
  data_dir = config.data_dir or preparation.default_data_dir()
  ds_name, train, validation, info, prepared_dir = open_source(
      config.source, data_dir, files=config.files, name=config.name, text_field=config.text_field,
      train_split=config.train_split, validation_split=config.validation_split)
  return Dataset(name=ds_name, tokenizer=tok, train_texts=train, validation_texts=validation,
                 boundaries=config.boundaries, prefetch=config.prefetch, read_threads=config.read_threads, info=info,
                 cache_dir=prepared_dir)
