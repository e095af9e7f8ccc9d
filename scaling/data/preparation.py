"""Preparing a local TFDS builder once per data_dir, safely when several processes race."""

from __future__ import annotations

import abc
import contextlib
import fcntl
import io
import os
import pathlib
import sys
import time
from typing import Any, Callable

from absl import logging as absl_logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

DEFAULT_DATA_DIR = "~/.cache/scaling/tensorflow_datasets"


def default_data_dir() -> str:
  """Returns $SCALING_DATA_DIR, else ~/.cache/scaling/tensorflow_datasets."""
  return os.path.expanduser(os.environ.get("SCALING_DATA_DIR") or DEFAULT_DATA_DIR)


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders over a scanned set of local files: documents are raw `text` bytes and a `KEY` string.

  A subclass names its config after the corpus fingerprint and lists the metadata to record (abstract
  methods: the builders' ABCMeta refuses a subclass that leaves one out). It also pins
  `code_path` to the defining module: TFDS 4.9.10 otherwise probes `importlib_resources`, a package it
  only declares for Python < 3.9, and fails to prepare on 3.11 without it.
  """

  VERSION = tfds.core.Version("1.0.0")
  DESCRIPTION = ""
  KEY = "key"

  def __init__(self, *, corpus: Any, **kwargs):
    self._corpus = corpus
    config = tfds.core.BuilderConfig(name=self.config_name(), version=self.VERSION,
                                     description=self.config_description())
    super().__init__(config=config, **kwargs)

  @abc.abstractmethod
  def config_name(self) -> str:
    """Names the config after what was scanned, so different inputs never share prepared files."""

  @abc.abstractmethod
  def config_description(self) -> str:
    """Describes this corpus in one line."""

  @abc.abstractmethod
  def metadata(self) -> dict[str, Any]:
    """Returns what to record in metadata.json (hashes, sizes, versions)."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Tensor(shape=(), dtype=np.object_),
            self.KEY: tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(**self.metadata()),
    )

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """Tells whether the builder's dataset is fully written (TFDS renames it into place last)."""
  return (pathlib.Path(builder.data_dir) / "dataset_info.json").exists()


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
  """Holds an exclusive flock on `path` (created if needed) for the block."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def quiet_tfds():
  """Silences TFDS's info and warning logs (e.g. "Using custom data configuration") for the block."""
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)


def prepare(make_builder: Callable[[], tfds.core.DatasetBuilder]) -> tuple[tfds.core.DatasetBuilder, float]:
  """Writes a builder's array_record files unless present; returns a builder that reads them and the seconds spent."""
  with quiet_tfds():
    builder = make_builder()
  if is_prepared(builder):
    if builder.info.splits:
      return builder, 0.0
    with quiet_tfds():  # made while another process was still preparing: it read no dataset_info, so no splits
      return make_builder(), 0.0
  start = time.perf_counter()
  with _file_lock(pathlib.Path(f"{builder.data_dir}.lock")), quiet_tfds():
    builder = make_builder()
    if not is_prepared(builder):
      print(f"scaling: preparing {builder.name}/{builder.builder_config.name} in {builder.data_dir} (once)",
            file=sys.stderr, flush=True)
      tfds.disable_progress_bar()
      with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP))
    builder = make_builder()
  return builder, time.perf_counter() - start
