"""User-defined laws from gin: `fit_law.name`, `.expression`, `.inputs`, `.grid` (and `.lower`, `.upper`).

Example (laws.gin):
  fit_law.name = 'offset_power'
  fit_law.expression = 'E + A * N ** -alpha'
  fit_law.inputs = ['N']
  fit_law.grid = {'E': [1.0, 2.0], 'A': [10.0, 100.0, 1000.0], 'alpha': [0.1, 0.3, 0.5]}
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gin

from scaling.errors import UserError
from scaling.fit import laws


@gin.configurable("fit_law")
def _fit_law(name: str = gin.REQUIRED, expression: str = gin.REQUIRED, inputs: Sequence[str] = gin.REQUIRED,
             grid: Mapping[str, Sequence[float]] = gin.REQUIRED, lower: Mapping[str, float] | None = None,
             upper: Mapping[str, float] | None = None) -> laws.Law:
  return laws.expression_law(name, expression, list(inputs), dict(grid), lower, upper)


def register(files: Sequence[str], bindings: Sequence[str]) -> Any:
  """Parses gin files and bindings and registers the law they bind to `fit_law`."""
  try:
    gin.parse_config_files_and_bindings(list(files), list(bindings))
    return _fit_law()
  except UserError:
    raise
  except Exception as e:  # gin raises many types (parse errors, missing files, unknown configurables)
    raise UserError(f"--gin_file/--gin_bindings: {type(e).__name__}: {str(e).splitlines()[0]}") from None
