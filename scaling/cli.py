"""The `scaling` command: one subcommand per stage of the path (train, fit, predict, report, ...).

Each subcommand lives in the module that does the work and registers itself through
`add_parser(subparsers)`; this module only dispatches and turns `UserError` into one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from scaling.errors import UserError

# subcommand -> module that provides `add_parser(subparsers)`; imported lazily so `scaling fit`
# never pays for importing jax and `scaling train` never imports matplotlib.
_COMMANDS = {
    "train": "scaling.train_cli",
    "fit": "scaling.fit.cli",
    "predict": "scaling.fit.cli",
    "report": "scaling.fit.cli",
    "fit-downstream": "scaling.fit.cli",
    "tokenizer": "scaling.tokenizer_cli",
    "sweep": "scaling.sweep.cli",
    "status": "scaling.sweep.cli",
    "config": "scaling.sweep.cli",
    "demo": "scaling.demo.cli",
}


class _OneLineErrors(argparse.ArgumentParser):
  """Reports bad arguments in one line with exit status 2, as every other bad input is (argparse would print
  the usage block first); its sub-command parsers are of this class too."""

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser(command: str | None) -> argparse.ArgumentParser:
  parser = _OneLineErrors(prog="scaling", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  wanted = [command] if command in _COMMANDS else list(_COMMANDS)
  seen = set()
  for name in wanted:
    module = _COMMANDS[name]
    if module in seen:
      continue
    seen.add(module)
    try:
      importlib.import_module(module).add_parser(sub)
    except ImportError as e:
      if command is not None:
        raise
      sub.add_parser(name, help=f"(unavailable: {e})")
  return parser


def main(argv: list[str] | None = None) -> int:
  """Entry point of the console script; returns the process exit status."""
  argv = sys.argv[1:] if argv is None else argv
  command = next((a for a in argv if not a.startswith("-")), None)
  parser = _parser(command)
  args, unknown = parser.parse_known_args(argv)
  if unknown:
    prog = f"scaling {args.command}" if args.command else "scaling"
    parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)\n")
  if args.command is None:
    parser.print_help()
    return 2
  try:
    return int(args.func(args) or 0)
  except UserError as e:  # gin appends "In call to configurable ..." lines to errors raised inside a configurable
    text = "\n".join(l for l in str(e).splitlines() if not l.strip().startswith("In call to configurable"))
    print(f"scaling {args.command}: error: {text}", file=sys.stderr)
    return UserError.exit_code
  except KeyboardInterrupt:
    print(f"scaling {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
