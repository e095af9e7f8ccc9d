"""Where run directories and sweep roots live: a local path, or a URL such as `gs://bucket/sweep`.

Local paths are `pathlib.Path`s; URLs are `etils.epath.Path`s (gcsfs underneath, the path layer orbax uses
too). The run contract needs three things from either, and this module gives them:
- replacing a file whole, so a reader never sees half of it: a temporary file and a rename on a local
  disk; a plain upload on an object store, where an object is replaced in one step and a rename is a
  copy (not atomic); and reading it whole, in one GET of one version of the object;
- creating a file only if it does not exist, with its whole text at once (sweep claims): a hard link
  from a written temporary file locally, an upload with the precondition `ifGenerationMatch=0` on GCS;
- appending to a file (metrics.jsonl, TensorBoard events, train.log): an object cannot be appended to, so
  on GCS the new bytes are uploaded as a temporary object and composed onto the end of the file in one
  step; each byte is uploaded once, where rewriting the file whole would upload it at every flush;
- a local directory for what a launcher writes beside a remote root (worker logs, job scripts), since
  `sbatch --output` and `subprocess` need a file system.
Listings are never cached (gcsfs caches them forever by default), because other processes write the
same root: a worker must see another's claim or status as soon as it exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Union

from scaling.errors import UserError

if TYPE_CHECKING:
  from etils import epath

AnyPath = Union[Path, "epath.Path"]  # etils.epath itself is imported on the first use of a URL
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")
_configured = False


def is_remote(path: str | os.PathLike) -> bool:
  """True for a URL (`gs://...`), False for a local path."""
  return bool(_URL.match(str(path)))


def path(p: str | os.PathLike) -> AnyPath:
  """The path object for a local path or a URL; an unsupported URL is a UserError."""
  if not is_remote(p):
    return Path(p)
  text = str(p)
  if not text.startswith("gs://"):
    raise UserError(f"{text}: only local paths and gs:// URLs are supported")
  _configure_gcs()
  from etils import epath

  return epath.Path(text)


def absolute(p: AnyPath) -> AnyPath:
  """The absolute form of a local path; a URL is absolute already."""
  return p if is_remote(p) else Path(p).absolute()


def _configure_gcs() -> None:
  """Makes gcsfs re-list on every call (see the module doc), once, before its first filesystem exists."""
  global _configured
  if _configured:
    return
  try:
    import fsspec
    import gcsfs  # noqa: F401
  except ImportError:
    raise UserError("gs:// paths need gcsfs: pip install 'scaling[gcs]'") from None
  for protocol in ("gs", "gcs"):
    fsspec.config.conf.setdefault(protocol, {})["use_listings_cache"] = False
  logging.getLogger("gcsfs").addFilter(lambda r: "Could not determine bucket type" not in r.getMessage())
  _configured = True


def _gcs():
  import fsspec

  _configure_gcs()
  return fsspec.filesystem("gcs")


def check_bucket(p: AnyPath) -> None:
  """For a URL, a UserError unless its bucket exists and these credentials reach it; nothing for a local path."""
  if not is_remote(p):
    return
  bucket = str(p).split("://", 1)[1].split("/", 1)[0]
  try:
    found = _gcs().exists(bucket)
  except Exception as e:  # credentials, network: whatever keeps us from the bucket is the user's to fix
    first = str(e).splitlines()[0] if str(e) else ""
    raise UserError(f"{p}: cannot reach gs://{bucket} ({type(e).__name__}: {first}); "
                    "check `gcloud auth application-default login` and the bucket's permissions") from None
  if not found:
    raise UserError(f"{p}: no bucket gs://{bucket} (or these credentials may not see it)")


def _written_beside(p: Path, text: str) -> Path:
  """A temporary file in `p`'s directory holding `text`, on disk (fsync), to be renamed or linked to `p`."""
  tmp = p.with_name(f".{p.name}.tmp{os.getpid()}.{threading.get_ident()}")
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  return tmp


def read_text(p: AnyPath) -> str:
  """The whole text of the file at `p`, all of one version of it. On an object store that takes one GET of the
  object: a file object's read asks for the size first and then a byte range, and an object replaced in between
  (a worker's heartbeat rewriting status.json) reads as the new object cut to the old size."""
  if is_remote(p):
    return _gcs().cat_file(str(p)).decode()
  return Path(p).read_text()


def write_text_atomic(p: AnyPath, text: str) -> None:
  """Replaces the file at `p` with `text` so that no reader ever sees part of it (see the module doc)."""
  if is_remote(p):
    _gcs().pipe_file(str(p), text.encode())
    return
  _written_beside(Path(p), text).replace(p)


def append_bytes(p: AnyPath, data: bytes) -> None:
  """Appends `data` to the file at `p`, creating it if missing. On GCS a reader sees the object before or after
  the append, never between: `data` goes up as a temporary object beside `p` (named without `p`'s name, so
  that no reader takes it for one of its files), which is composed onto the end of `p` and deleted."""
  if not data:
    return
  if not is_remote(p):
    with open(p, "ab") as f:
      f.write(data)
    return
  fs, target = _gcs(), str(p)
  if not fs.exists(target):
    fs.pipe_file(target, data)
    return
  part = f"{target.rsplit('/', 1)[0]}/.append-{os.getpid()}-{threading.get_ident()}"
  fs.pipe_file(part, data)
  try:
    fs.merge(target, [target, part])
  finally:
    with contextlib.suppress(Exception):  # a temporary object left behind is harmless; the append is done
      fs.rm_file(part)


class AppendMirror:
  """Keeps `remote` equal to a local file that only grows: each `sync` appends to it what the local file has
  gained since the last one (`append_bytes`). For what is written locally and read remotely, on GCS."""

  def __init__(self, local: Path, remote: AnyPath):
    self.local, self.remote, self._sent = Path(local), remote, 0

  def sync(self) -> None:
    with open(self.local, "rb") as f:
      f.seek(self._sent)
      data = f.read()
    append_bytes(self.remote, data)
    self._sent += len(data)


def create_exclusive(p: AnyPath, text: str) -> bool:
  """Creates the file at `p` holding `text` if no file is there; False (and nothing written) if one is."""
  if is_remote(p):
    try:
      _gcs().pipe_file(str(p), text.encode(), mode="create")
    except FileExistsError:
      return False
    return True
  tmp = _written_beside(Path(p), text)
  try:
    os.link(tmp, p)  # fails if `p` exists; a reader never sees the file without its text
  except FileExistsError:
    return False
  finally:
    tmp.unlink()
  return True


def local_dir(root: AnyPath) -> Path:
  """A local directory for a launcher's own files about `root`: the root itself when it is local, else one
  under the scaling cache (`~/.cache/scaling/roots/<bucket>/<path>-<hash>`)."""
  if not is_remote(root):
    return Path(root)
  from scaling import cache

  text = str(root).rstrip("/")
  tail = re.sub(r"[^A-Za-z0-9._-]+", "_", text.split("://", 1)[1])
  return cache.cache_root() / "roots" / f"{tail}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
