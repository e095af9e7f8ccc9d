"""gin plumbing: parse the user's files and bindings, turn gin's errors into one line, save the operative config.

gin is the format users write and share; every error it raises for bad input becomes a `UserError`
naming the file or binding, raised before any work starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import gin

from scaling import storage
from scaling.errors import UserError
from scaling.sweep import spec as _sweep_spec  # noqa: F401  (registers the sweep knobs: a run's spec.gin carries them)
from scaling.launch import slurm as _slurm  # noqa: F401  (the slurm.* knobs a sweep file may set)
from scaling.demo import recipe as _demo  # noqa: F401  (the demo.* knobs of the demo's sweep files)
from scaling.launch import tpu as _tpu  # noqa: F401  (the tpu.* knobs)

PACKAGE_ROOT = Path(__file__).resolve().parent
CONFIGS = PACKAGE_ROOT / "configs"  # shipped inside the package, so `pip install .` runs the default anywhere
REPO_ROOT = PACKAGE_ROOT.parent  # a checkout's root (its top-level `configs` links to the package's)
DEFAULT_EXPERIMENT = CONFIGS / "experiments" / "default.gin"
SEARCH_PATH = (PACKAGE_ROOT, CONFIGS)  # `include 'configs/models/gpt.gin'` and `include 'models/gpt.gin'` both resolve

T = TypeVar("T")


def _one_line(error: BaseException) -> str:
  """gin's messages span lines (binding, file, location); join the informative ones."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip() and not l.strip().startswith("In call to configurable")]
  return " | ".join(lines[:3]) if lines else type(error).__name__


def _plain_files_only() -> None:
  """Reads gin files from the file system only.

  gin also probes every path as a Python package resource; with a checkout on PYTHONPATH that probe
  imports the top-level `configs/` directory as a package and fails, and elsewhere it logs a spurious
  "Path not found" for every include. Our configs are plain files, so the probe is dropped.
  """
  gin.config._FILE_READERS[:] = [(r, check) for r, check in gin.config._FILE_READERS if check is os.path.isfile]


def resolve_gin_file(name: str) -> Path:
  """A gin file given on the command line: as a path or gs:// URL, else under the package's configs/ (or the package)."""
  if storage.is_remote(name):
    remote = storage.path(name)
    if remote.is_file():
      return remote
    raise UserError(f"gin file {name!r} does not exist")
  for candidate in (Path(name), CONFIGS / name, PACKAGE_ROOT / name):
    if candidate.is_file():
      return candidate
  raise UserError(f"gin file {name!r} does not exist")


def use_package_configs() -> None:
  """Makes gin read plain files and find includes under the package and its configs/ (`SEARCH_PATH`)."""
  _plain_files_only()
  for root in SEARCH_PATH:
    if str(root) not in gin.config._LOCATION_PREFIXES:  # add_config_file_search_path does not dedupe
      gin.add_config_file_search_path(str(root))


def parse(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files (with includes resolved against the package and its configs/) and bindings."""
  gin.clear_config()
  use_package_configs()
  gin_files = [resolve_gin_file(f) for f in gin_files]
  errors = (ValueError, SyntaxError, IOError, KeyError, TypeError)
  try:
    for path in gin_files:  # gin opens local files itself; a gs:// file (a run's spec.gin) is read here
      if storage.is_remote(path):
        gin.parse_config(path.read_text())
      else:
        gin.parse_config_file(str(path))
  except errors as e:
    raise UserError(f"bad gin config: {_one_line(e)}") from None
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except errors as e:
      raise UserError(f"bad --gin_bindings={binding!r}: {_one_line(e)}") from None


_INCLUDE = re.compile(r"""^\s*include\s+(['"])(.+?)\1\s*(#.*)?$""")


def _include_target(name: str, including: Path) -> Path:
  """Where gin finds an included file: as given, beside the including file, or on the search path."""
  for candidate in (Path(name), including.parent / name, *(root / name for root in SEARCH_PATH)):
    if candidate.is_file():
      return candidate
  raise UserError(f"{including}: included gin file {name!r} does not exist")


def inline_includes(path: str | Path, _seen: tuple[Path, ...] = ()) -> str:
  """The text of a gin file with every `include` replaced by the included file's text (recursively).

  The result parses to the same config on any machine, without the files it included.
  """
  path = resolve_gin_file(str(path)) if not _seen else Path(path)
  if path.resolve() in _seen:
    raise UserError(f"{path}: gin files include each other in a cycle")
  out = []
  for line in path.read_text().splitlines():
    match = _INCLUDE.match(line)
    if not match:
      out.append(line)
      continue
    target = _include_target(match.group(2), path)
    out.append(f"# --- begin include '{match.group(2)}' ---")
    out.append(inline_includes(target, (*_seen, path.resolve())).rstrip("\n"))
    out.append(f"# --- end include '{match.group(2)}' ---")
  return "\n".join(out) + "\n"


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
