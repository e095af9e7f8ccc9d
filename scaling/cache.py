"""Start-up caches under `~/.cache/scaling` (or $SCALING_CACHE_DIR): JAX's persistent compilation cache and
small JSON caches of values that are costly to recompute at every start (such as the `xla` FLOP count).

A sweep pays the start-up cost of every run, so a warm start must not recompile or re-measure anything
that the same machine already knows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPILE_MIN_SECONDS = 0.2  # compilations faster than this are not worth a cache entry


def cache_root() -> Path:
  """$SCALING_CACHE_DIR, else ~/.cache/scaling."""
  return Path(os.environ.get("SCALING_CACHE_DIR") or Path.home() / ".cache" / "scaling")


def enable_compilation_cache() -> Path | None:
  """Turns on JAX's persistent compilation cache under cache_root()/jax, unless the user chose one already.

  JAX_COMPILATION_CACHE_DIR (or an earlier jax.config setting) wins; SCALING_COMPILATION_CACHE=0 turns it off.
  """
  import jax

  if os.environ.get("SCALING_COMPILATION_CACHE", "1") == "0":
    return None
  chosen = jax.config.jax_compilation_cache_dir
  if chosen:
    return Path(chosen)
  path = cache_root() / "jax"
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_MIN_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def key_of(obj: Any) -> str:
  """A stable hash of a JSON-able description (sorted keys)."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_value(name: str, key: Any, compute: Callable[[], Any]) -> Any:
  """The value stored for `key` in cache_root()/<name>.json, computing and storing it on a miss.

  The file maps key hashes to values; a corrupt or unwritable cache only costs a recomputation.
  """
  path = cache_root() / f"{name}.json"
  digest = key_of(key)
  table = _read_table(path)
  if digest in table:
    return table[digest]
  value = compute()
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {**_read_table(path), digest: value}  # read again: another process may have added entries meanwhile
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(table, sort_keys=True))
    tmp.replace(path)
  except OSError:
    pass
  return value


def _read_table(path: Path) -> dict:
  try:
    table = json.loads(path.read_text())
    return table if isinstance(table, dict) else {}
  except (OSError, ValueError):
    return {}
