"""Device mesh and the one table that maps the model's logical axes onto it.

The model names every parameter and activation dimension with a logical axis ("embed", "mlp", ...);
`LOGICAL_RULES` alone decides which mesh axis (`data`, `fsdp`, `tensor`) shards it. A mesh axis that
does not divide a dimension is dropped for that array (it is replicated along it) rather than failing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from scaling.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes. Parameters: embed over fsdp (ZeRO-3 style), heads/mlp/vocab over tensor
# (Megatron style). Activations ("act_*"): batch over data and fsdp, features over tensor.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("norm", None),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("act_batch", ("data", "fsdp")),
    ("act_seq", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)
_RULES = dict(LOGICAL_RULES)


def parse_mesh(text: str, num_devices: int) -> tuple[int, int, int]:
  """Parses `--mesh=DxFxT` (one entry may be -1, filling the rest) into a (data, fsdp, tensor) shape."""
  parts = text.lower().split("x")
  try:
    dims = [int(p) for p in parts]
  except ValueError:
    dims = []
  if len(dims) != 3 or any(d == 0 or d < -1 for d in dims) or dims.count(-1) > 1:
    raise UserError(f"--mesh={text!r} must be DxFxT with positive sizes and at most one -1, e.g. 2x2x2 or -1x1x1")
  known = math.prod(d for d in dims if d != -1)
  if -1 in dims:
    if num_devices % known:
      raise UserError(f"--mesh={text!r}: {num_devices} devices cannot be split into {known}-device groups")
    dims[dims.index(-1)] = num_devices // known
  if math.prod(dims) != num_devices:
    raise UserError(f"--mesh={text!r} needs {math.prod(dims)} devices but {num_devices} are available")
  return tuple(dims)


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axes, so XLA propagates shardings between annotations.

  Over all devices, `jax.make_mesh` orders them by the physical topology (it matters on TPU slices);
  explicit `devices` are used in the order given.
  """
  if devices is None:
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec, dropping mesh axes that do not divide a dimension."""
  used: set[str] = set()
  spec = []
  for name, size in zip(axes, shape, strict=True):
    if name is not None and name not in _RULES:
      raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_RULES")
    target = _RULES.get(name) if name is not None else None
    mesh_axes = (target,) if isinstance(target, str) else tuple(target or ())
    kept = []
    for axis in mesh_axes:
      n = mesh.shape[axis]
      if axis not in used and n > 1 and size % (math.prod(mesh.shape[a] for a in kept) * n) == 0:
        kept.append(axis)
        used.add(axis)
    spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*spec)


def state_shardings(abstract_state, mesh: Mesh):
  """NamedShardings for a tree of nnx Variables (from `nnx.split`) using their `out_sharding` metadata."""

  def one(var):
    value = var.get_value()
    axes = var.get_metadata().get("out_sharding") or (None,) * len(value.shape)
    return var.replace(NamedSharding(mesh, logical_to_spec(axes, value.shape, mesh)))

  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Annotates an activation with logical axes inside jit; a no-op outside a mesh context."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, x.shape, mesh))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """The batch is split over (data, fsdp) along its first axis; every other axis is replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Builds global arrays from this process's rows of the batch (each process loads only its share).

  With one process the rows are the whole batch: one batched transfer of all its arrays (half the per-step
  host cost of building each array on its own, which shows at small models' step times).
  """
  shardings = {k: batch_sharding(mesh, v.ndim) for k, v in local.items()}
  if jax.process_count() == 1:
    return jax.device_put(local, shardings)
  return {k: jax.make_array_from_process_local_data(shardings[k], v) for k, v in local.items()}
