"""TFDS catalog datasets: read from prepared files without TensorFlow, or one clear line on how to prepare."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from scaling.data import catalog
from scaling.data import make_dataset
from scaling.errors import UserError


class ScalingTestCatalog(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A stand-in for a catalog dataset prepared elsewhere: a 'sentence' feature, train and test splits."""

  VERSION = tfds.core.Version("2.1.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"sentence": tfds.features.Text(), "label": tfds.features.Scalar(np.int64)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0, 40), "test": self._generate_examples(40, 50)}

  def _generate_examples(self, start, stop):
    for i in range(start, stop):
      yield i, {"sentence": f"sentence number {i} ü", "label": i}


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("catalog")
  builder = ScalingTestCatalog(data_dir=str(data_dir), file_format="array_record")
  tfds.disable_progress_bar()
  builder.download_and_prepare()
  return str(data_dir)


def test_a_prepared_dataset_is_read_from_its_files(prepared_dir):
  ds = make_dataset(source="tfds", name="scaling_test_catalog", data_dir=prepared_dir, text_field="sentence",
                    validation_split="test")
  assert ds.name == "scaling_test_catalog"
  assert sorted(ds.validation_texts) == sorted(f"sentence number {i} ü".encode() for i in range(40, 50))
  assert len(ds.train_texts) == 40
  batch = next(ds.train_iterator(seq_len=16, global_batch=2))
  assert batch["inputs"].shape == (2, 16)


def test_missing_split_or_field_is_a_user_error(prepared_dir):
  with pytest.raises(UserError, match="no split 'validation'"):
    make_dataset(source="tfds", name="scaling_test_catalog", data_dir=prepared_dir, text_field="sentence")
  with pytest.raises(UserError, match="no feature 'text'"):
    make_dataset(source="tfds", name="scaling_test_catalog", data_dir=prepared_dir, validation_split="test")


def test_an_unprepared_catalog_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(UserError, match=f"lm1b is not prepared in {tmp_path}; prepare it once with: tfds build lm1b "
                                      f"--data_dir={tmp_path} --file_format=array_record"):
    catalog.open_builder("lm1b", str(tmp_path))


def test_an_unknown_dataset_name_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
    make_dataset(source="tfds", name="no_such_dataset_xyz", data_dir=str(tmp_path))
