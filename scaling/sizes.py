"""Size families: a table of named shapes, and a rule that turns a target parameter count into a shape.

A name maps to (width, depth, heads, MLP width) as in big_vision's `decode_variant`; the rule keeps the
head size fixed and the width/depth ratio bounded, so `model.params = 3e5` picks a sensible shape.
"""

from __future__ import annotations

import math

import gin

from scaling.model import ModelConfig

# name -> (width, depth, heads, mlp_width). Head size 64 from "s" up; MLP width 4x width.
# Non-embedding parameters (SwiGLU, no GQA) are listed for orientation; see `scaling.model.param_counts`.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "nano": (64, 2, 2, 256),  # ~0.13M
    "micro": (128, 3, 4, 512),  # ~0.79M
    "tiny": (192, 4, 6, 768),  # ~2.4M
    "mini": (256, 4, 4, 1024),  # ~4.2M
    "xs": (384, 6, 6, 1536),  # ~14M
    "s": (512, 8, 8, 2048),  # ~34M
    "m": (768, 12, 12, 3072),  # ~113M
    "l": (1024, 24, 16, 4096),  # ~403M
    "xl": (2048, 24, 32, 8192),  # ~1.6B
    "xxl": (4096, 32, 32, 16384),  # ~8.6B
}


MAX_PARAMS_MISS = 0.25  # model.params is rejected when the nearest shape misses it by more than this
SHAPE_KNOBS = ("width", "depth", "heads", "kv_heads", "mlp_width")


def decode_size(name: str) -> tuple[int, int, int, int]:
  """(width, depth, heads, mlp_width) for a size name of the table."""
  if name not in SIZES:
    raise ValueError(f"model.size={name!r} is not a known size; known: {', '.join(SIZES)}")
  return SIZES[name]


def non_embedding_params(width: int, depth: int, head_dim: int, mlp_ratio: float, mlp: str, kv_ratio: int = 1) -> int:
  """Non-embedding parameters of a shape with heads = width / head_dim (matches `model.param_counts`)."""
  heads = width // head_dim
  kv = heads // kv_ratio
  mlp_width = mlp_width_for(width, mlp_ratio)
  per_layer = 2 * width + 2 * width * heads * head_dim + 2 * width * kv * head_dim
  per_layer += (3 if mlp == "swiglu" else 2) * width * mlp_width
  return depth * per_layer + width


def mlp_width_for(width: int, mlp_ratio: float) -> int:
  """MLP width for a ratio, rounded to a multiple of 64 (or of 8 below that)."""
  q = 64 if width * mlp_ratio >= 256 else 8
  return max(q, int(round(width * mlp_ratio / q)) * q)


def shape_candidates(*, head_dim: int = 64, mlp_ratio: float = 4.0, mlp: str = "swiglu", kv_ratio: int = 1,
                     min_aspect: float = 32.0, max_aspect: float = 128.0, min_depth: int = 1,
                     max_depth: int = 128) -> list[tuple[int, int, int, int, int]]:
  """Every shape of the rule: (width, depth, heads, mlp_width, non-embedding parameters).

  Width is a multiple of `head_dim` (whose heads divide by `kv_ratio`); width/depth stays within
  [min_aspect, max_aspect] (Kaplan et al. 2020 find loss flat in that band) and depth within
  [min_depth, max_depth] (a fixed-depth family: min_depth = max_depth).
  """
  out = []
  for depth in range(max(1, min_depth), min(128, max_depth) + 1):
    for heads in range(kv_ratio, 257, kv_ratio):
      width = heads * head_dim
      if min_aspect <= width / depth <= max_aspect:
        n = non_embedding_params(width, depth, head_dim, mlp_ratio, mlp, kv_ratio)
        out.append((width, depth, heads, mlp_width_for(width, mlp_ratio), n))
  return out


def canonical_shapes(preferred_aspect: float = 64.0, **rule) -> list[tuple[int, int, int, int, int]]:
  """The shapes `shape_for_params(n)` returns for their own non-embedding count n: asking `model.params = n`
  for one of them gives exactly it (shapes whose counts nearly tie lose to the one of nearest aspect)."""
  shapes = shape_candidates(**rule)
  order = sorted(range(len(shapes)), key=lambda i: shapes[i][4])
  out = []
  for rank, i in enumerate(order):
    n = shapes[i][4]
    near = [j for j in order[max(0, rank - 64):rank + 64] if round(abs(math.log(shapes[j][4] / n)), 2) == 0.0]
    best = min(near, key=lambda j: (abs(math.log(shapes[j][0] / shapes[j][1] / preferred_aspect)), j))
    if best == i:
      out.append(shapes[i])
  return out


def check_depths(min_depth: int, max_depth: int) -> None:
  """ValueError unless `model.min_depth` and `model.max_depth` are whole numbers with 1 <= min <= max."""
  if not (all(isinstance(d, int) and not isinstance(d, bool) for d in (min_depth, max_depth))
          and 1 <= min_depth <= max_depth):
    raise ValueError(f"model.min_depth and model.max_depth must be whole numbers with 1 <= min <= max, got "
                     f"{min_depth!r}, {max_depth!r}")


def shape_for_params(
    target: float,
    *,
    head_dim: int = 64,
    mlp_ratio: float = 4.0,
    mlp: str = "swiglu",
    kv_ratio: int = 1,
    min_aspect: float = 32.0,
    max_aspect: float = 128.0,
    min_depth: int = 1,
    max_depth: int = 128,
    preferred_aspect: float = 64.0,
) -> tuple[int, int, int, int]:
  """(width, depth, heads, mlp_width) of `shape_candidates` whose non-embedding count is closest to `target`;
  ties go to the shape whose aspect ratio (width/depth) is nearest `preferred_aspect`."""
  if not target > 0:
    raise ValueError(f"model.params must be positive, got {target!r}")
  shapes = shape_candidates(head_dim=head_dim, mlp_ratio=mlp_ratio, mlp=mlp, kv_ratio=kv_ratio,
                            min_aspect=min_aspect, max_aspect=max_aspect, min_depth=min_depth, max_depth=max_depth)
  if not shapes:
    raise ValueError(f"no shape with head_dim={head_dim}, aspect in [{min_aspect}, {max_aspect}] and depth in "
                     f"[{min_depth}, {max_depth}] fits {target:g}")
  key = lambda s: (round(abs(math.log(s[4] / target)), 2), abs(math.log(s[0] / s[1] / preferred_aspect)))
  width, depth, heads, mlp_width, n = min(shapes, key=key)
  if abs(math.log(n / target)) > math.log(1 + MAX_PARAMS_MISS):
    lo, hi = min(s[4] for s in shapes), max(s[4] for s in shapes)
    raise ValueError(
        f"model.params={target:g} is out of reach of the shape rule (head_dim={head_dim}): its nearest shape has "
        f"{n:,} non-embedding parameters (more than {MAX_PARAMS_MISS:.0%} off); its shapes span "
        f"{lo:.3g} to {hi:.3g}, sparsely at the small end (a smaller model.head_dim reaches lower)"
    )
  return width, depth, heads, mlp_width


@gin.configurable("model")
def model_config(
    vocab_size: int,
    size: str | None = None,
    params: float | None = None,
    width: int | None = None,
    depth: int | None = None,
    heads: int | None = None,
    kv_heads: int | None = None,
    head_dim: int | None = None,
    mlp_width: int | None = None,
    mlp: str = "swiglu",
    mlp_ratio: float = 4.0,
    tie_embeddings: bool = False,
    rope_theta: float = 10_000.0,
    compute_dtype: str = "float32",
    remat: str = "none",
    z_loss: float = 0.0,
    init_std: float = 0.02,
    unroll_layers: bool = False,
    attention_blocks: int = 1,
    parameterization: str = "standard",
    base_width: int | None = None,
    base_head_dim: int | None = None,
    loss_chunks: int | None = None,
    min_aspect: float = 32.0,
    max_aspect: float = 128.0,
    min_depth: int = 1,
    max_depth: int = 128,
) -> ModelConfig:
  """The gin knobs of the model: a size name, a target non-embedding count, or an explicit shape.

  `model.size = 's'` reads the table; `model.params = 3e5` applies `shape_for_params`; explicit
  width/depth/heads/kv_heads/mlp_width override a size (but not `params`, which picks them all).
  `parameterization = 'mup'` with `base_width` (and `base_head_dim` where the head size grows with width)
  makes the learning rate transfer across widths;
  `loss_chunks` splits the loss over the sequence (None: automatic). `min_aspect`/`max_aspect` bound
  width/depth for `params` (tiny CPU models need a lower bound than Kaplan's 32), `min_depth`/`max_depth`
  its depth (equal: a family that scales width alone). `vocab_size` comes from the
  tokenizer, not from gin.
  """
  if size is not None and params is not None:
    raise ValueError("set model.size or model.params, not both")
  if params is not None:
    explicit = [k for k, v in dict(width=width, depth=depth, heads=heads, kv_heads=kv_heads, mlp_width=mlp_width).items() if v is not None]
    if explicit:
      raise ValueError(f"model.params picks the whole shape: do not also set model.{explicit[0]} (use explicit knobs alone)")
  base: dict = {}
  if size is not None:
    base = dict(zip(("width", "depth", "heads", "mlp_width"), decode_size(size)))
  elif params is not None:
    if isinstance(params, bool) or not isinstance(params, (int, float)) or not params > 0:
      raise ValueError(f"model.params must be a positive number, got {params!r}")
    if not 0 < min_aspect <= max_aspect:
      raise ValueError(f"model.min_aspect and model.max_aspect must satisfy 0 < min <= max, got {min_aspect!r}, {max_aspect!r}")
    check_depths(min_depth, max_depth)
    rule = dict(head_dim=head_dim or 64, mlp_ratio=mlp_ratio, mlp=mlp, kv_ratio=1, min_aspect=min_aspect,
                max_aspect=max_aspect, min_depth=min_depth, max_depth=max_depth)
    base = dict(zip(("width", "depth", "heads", "mlp_width"), shape_for_params(params, **rule)))
  given = dict(width=width, depth=depth, heads=heads, mlp_width=mlp_width)
  shape = {**base, **{k: v for k, v in given.items() if v is not None}}
  missing = [k for k in ("width", "depth", "heads") if k not in shape]
  if missing:
    raise ValueError(f"the model shape is incomplete: set model.size, model.params or model.{missing[0]}")
  if not isinstance(shape["width"], int) or not isinstance(shape["heads"], int) or shape["heads"] <= 0:
    raise ValueError(f"model.width and model.heads must be positive integers, got {shape['width']!r}, {shape['heads']!r}")
  if head_dim is None:
    if shape["width"] % shape["heads"]:
      raise ValueError(f"model.width={shape['width']} is not divisible by model.heads={shape['heads']}; set model.head_dim")
    head_dim = shape["width"] // shape["heads"]
  if "mlp_width" not in shape:
    shape["mlp_width"] = mlp_width_for(shape["width"], mlp_ratio)
  if parameterization == "mup" and base_head_dim is None:
    base_head_dim = head_dim  # resolved, so run.json records it and a run of the older 1/head_dim rule cannot resume
  return ModelConfig(
      vocab_size=vocab_size,
      kv_heads=shape["heads"] if kv_heads is None else kv_heads,
      head_dim=head_dim,
      mlp=mlp,
      tie_embeddings=tie_embeddings,
      rope_theta=rope_theta,
      compute_dtype=compute_dtype,
      remat=remat,
      z_loss=z_loss,
      init_std=init_std,
      unroll_layers=unroll_layers,
      attention_blocks=attention_blocks,
      parameterization=parameterization,
      base_width=base_width,
      base_head_dim=base_head_dim,
      loss_chunks=loss_chunks,
      **shape,
  )
