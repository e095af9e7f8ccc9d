"""The data layer: corpora through TFDS (array_record), tokenizers, and grain pipelines of packed batches.

The trainer calls `make_dataset()` (gin: `data`) and `plan_steps`; see docs/data.md.
"""

from scaling.data.dataset import Dataset, make_dataset
from scaling.data.pipeline import plan_steps, plan_unique

__all__ = ["Dataset", "make_dataset", "plan_steps", "plan_unique"]
