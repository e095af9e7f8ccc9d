"""TFDS catalog datasets (c4/en, lm1b, wikipedia, ...) read where they were prepared, without TensorFlow.

Datasets are opened from their files (`dataset_info.json` and array_record shards in a local or gs://
data_dir), never from the catalog's generation code, so reading needs neither TensorFlow nor Beam.
Preparing one is a separate, offline step that this module only explains.
"""

from __future__ import annotations

import tensorflow_datasets as tfds
from tensorflow_datasets.core import read_only_builder

from scaling.data.preparation import quiet_tfds
from scaling.errors import UserError


def prepare_hint(name: str, data_dir: str) -> str:
  """Returns the one command that prepares `name` in a form this module reads."""
  return f"tfds build {name} --data_dir={data_dir} --file_format=array_record"


def _is_catalog_name(name: str) -> bool:
  return name.split("/")[0].split(":")[0] in set(tfds.list_builders(with_community_datasets=False))


def open_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Opens a prepared dataset from its files; unknown or unprepared ones are a UserError."""
  try:
    with quiet_tfds():
      builder = read_only_builder.builder_from_files(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    if _is_catalog_name(name):
      raise UserError(f"TFDS dataset {name} is not prepared in {data_dir}; prepare it once with: "
                      f"{prepare_hint(name, data_dir)}") from None
    raise UserError(f"unknown TFDS dataset {name!r} (data.name): not in the TFDS catalog and not in {data_dir}") from None
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise UserError(f"TFDS dataset {name} in {data_dir} is stored as {builder.info.file_format.value}, which needs "
                    f"TensorFlow to read; rebuild it with: {prepare_hint(name, data_dir)}")
  return builder


def check_split(builder: tfds.core.DatasetBuilder, name: str, split: str, knob: str, text_field: str) -> None:
  """Raises UserError unless the split exists and its examples have the text field."""
  if split not in builder.info.splits:
    raise UserError(f"TFDS dataset {name} has no split {split!r} ({knob}); it has {', '.join(builder.info.splits)}")
  if text_field not in builder.info.features:
    raise UserError(f"TFDS dataset {name} has no feature {text_field!r} (data.text_field); "
                    f"it has {', '.join(builder.info.features)}")
