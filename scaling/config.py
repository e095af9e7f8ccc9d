"""gin plumbing: parse the user's files and bindings, turn gin's errors into one line, save the operative config.

gin is the format users write and share; every error it raises for bad input becomes a `UserError`
naming the file or binding, raised before any work starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import gin

from scaling.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"
DEFAULT_EXPERIMENT = CONFIGS / "experiments" / "default.gin"

T = TypeVar("T")


def _one_line(error: BaseException) -> str:
  """gin's messages span lines (binding, file, location); join the informative ones."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip() and not l.strip().startswith("In call to configurable")]
  return " | ".join(lines[:3]) if lines else type(error).__name__


def parse(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files (with includes resolved against the repo and configs/) and bindings."""
  gin.clear_config()
  for root in (REPO_ROOT, CONFIGS):
    if str(root) not in gin.config._LOCATION_PREFIXES:  # add_config_file_search_path does not dedupe
      gin.add_config_file_search_path(str(root))
  for f in gin_files:
    if not Path(f).is_file() and not (CONFIGS / f).is_file() and not (REPO_ROOT / f).is_file():
      raise UserError(f"gin file {f!r} does not exist")
  errors = (ValueError, SyntaxError, IOError, KeyError, TypeError)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), [], finalize_config=False)
  except errors as e:
    raise UserError(f"bad gin config: {_one_line(e)}") from None
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except errors as e:
      raise UserError(f"bad --gin_bindings={binding!r}: {_one_line(e)}") from None


_REQUIRED = re.compile(r"Required bindings for `(\w+)` not provided in config: \[([^\]]*)\]")


def build(make: Callable[..., T], *args, **kwargs) -> T:
  """Calls a gin configurable, turning a missing %REQUIRED value or an invalid one into a UserError."""
  try:
    return make(*args, **kwargs)
  except (ValueError, TypeError, RuntimeError) as e:
    text = str(e)
    match = _REQUIRED.search(text)
    if match:
      names = [n.strip(" '\"") for n in match.group(2).split(",")]
      scope = getattr(make, "__gin_name__", match.group(1))
      raise UserError(
          f"{scope}.{names[0]} is required but not set: add `{scope}.{names[0]} = ...` to a gin file or --gin_bindings"
      ) from None
    raise UserError(f"invalid config: {_one_line(e)}") from None


def operative_config() -> str:
  """The gin config of everything actually used, as text that reproduces the run on its own."""
  return gin.operative_config_str()
