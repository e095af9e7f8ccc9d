"""`scaling tokenizer train`: trains a SentencePiece BPE/unigram model offline on a dataset split.

The corpus is the one the gin files configure (`data.source`, `data.files`, `data.name`, ...), so a
tokenizer is trained on exactly the data a sweep will read.
"""

from __future__ import annotations

import argparse
import pathlib

import gin

from scaling import config
from scaling.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  """Registers `tokenizer` with its `train` action."""
  parser = subparsers.add_parser("tokenizer", help="train a SentencePiece tokenizer on a dataset split")
  actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
  train = actions.add_parser("train", help="train a SentencePiece BPE/unigram model on a split")
  train.add_argument("--gin_file", action="append", default=[], help="gin files choosing the data (data.*)")
  train.add_argument("--gin_bindings", action="append", default=[], help="extra bindings, e.g. \"data.source = 'text'\"")
  train.add_argument("--out", required=True, help="path of the .model file to write")
  train.add_argument("--vocab_size", type=int, default=8192, help="number of pieces (default 8192)")
  train.add_argument("--model_type", choices=("bpe", "unigram"), default="bpe")
  train.add_argument("--split", choices=("train", "validation"), default="train")
  train.add_argument("--max_bytes", type=int, default=100_000_000, help="read about this many bytes of text")
  train.set_defaults(func=run_train)


def parse_gin(files: list[str], bindings: list[str]) -> None:
  """Parses gin files and bindings as `scaling train` does (files and includes also under the package's
  configs/), ignoring configurables this command does not use."""
  config.use_package_configs()
  files = [str(config.resolve_gin_file(f)) for f in files]
  try:
    gin.parse_config_files_and_bindings(files, bindings, skip_unknown=True)
  except OSError as e:
    raise UserError(f"cannot read gin file {e.filename or files}: {e.strerror or e}") from None
  except (ValueError, SyntaxError) as e:
    raise UserError(f"bad gin config in {' '.join(files + bindings)}: {str(e).splitlines()[0]}") from None


def run_train(args: argparse.Namespace) -> int:
  """Trains the model and prints where it went; returns the exit status."""
  from scaling.data import dataset, tokenizers  # pylint: disable=g-import-not-at-top
  if args.vocab_size < 260:
    raise UserError(f"--vocab_size {args.vocab_size} is too small: the model holds 256 byte pieces plus specials")
  out = pathlib.Path(args.out)
  blocker = next((p for p in out.parents if p.exists()), None)
  if blocker is not None and not blocker.is_dir():
    raise UserError(f"--out {args.out}: {blocker} is a file, so the directory cannot be created")
  parse_gin(args.gin_file, args.gin_bindings)
  ds = dataset.make_dataset(tokenizer="bytes", tokenizer_model=None, vocab_size=None)
  texts = ds.train_texts if args.split == "train" else ds.validation_texts
  used = tokenizers.take_bytes(texts, args.max_bytes)
  out = tokenizers.train_sentencepiece(used, args.out, vocab_size=args.vocab_size, model_type=args.model_type)
  trained = tokenizers.SentencePieceTokenizer(out)
  print(f"wrote {out}: {args.model_type}, vocab {trained.vocab_size}, hash {trained.identity()['hash']}, "
        f"from {len(used)} documents ({sum(map(len, used))} bytes) of {ds.name} {args.split}")
  return 0
