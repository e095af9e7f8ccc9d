"""Decoder-only Transformer LM in Flax NNX: pre-RMSNorm, rotary embeddings, GQA, SwiGLU or GELU MLP.

Parameters are float32 and carry logical axis names (see `sharding.LOGICAL_RULES`); the layers are
stacked along a leading `layers` axis and applied with `nnx.scan`, so compile time does not grow with
depth. Shape suffixes: B batch, L sequence, D width, H heads, K kv heads, E head dim, F MLP width,
V vocabulary, N layers.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.sharding import constrain

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
MLP_KINDS = ("swiglu", "gelu")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The shape and numerics of one model; hashable so it can be a static jit argument."""

  vocab_size: int
  width: int
  depth: int
  heads: int
  kv_heads: int
  head_dim: int
  mlp_width: int
  mlp: str = "swiglu"
  tie_embeddings: bool = False
  rope_theta: float = 10_000.0
  compute_dtype: str = "float32"
  remat: str = "none"
  z_loss: float = 0.0
  init_std: float = 0.02
  norm_eps: float = 1e-6
  unroll_layers: bool = False  # unrolled layers: exact XLA cost analysis, sometimes faster when shallow
  attention_blocks: int = 1  # >1: causal attention in query blocks that skip keys above the diagonal

  def __post_init__(self):
    for name in ("vocab_size", "width", "depth", "heads", "kv_heads", "head_dim", "mlp_width"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
    if self.heads % self.kv_heads:
      raise ValueError(f"model.heads={self.heads} must be a multiple of model.kv_heads={self.kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"model.head_dim={self.head_dim} must be even for rotary embeddings")
    if self.mlp not in MLP_KINDS:
      raise ValueError(f"model.mlp must be one of {MLP_KINDS}, got {self.mlp!r}")
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(f"model.compute_dtype must be one of {tuple(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"model.remat must be one of {tuple(REMAT_POLICIES)}, got {self.remat!r}")
    if not isinstance(self.attention_blocks, int) or self.attention_blocks < 1:
      raise ValueError(f"model.attention_blocks must be a positive integer, got {self.attention_blocks!r}")
    if not self.z_loss >= 0:
      raise ValueError(f"model.z_loss must be >= 0, got {self.z_loss!r}")

  @property
  def dtype(self):
    return COMPUTE_DTYPES[self.compute_dtype]


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str, ...], std: float | None) -> nnx.Param:
  """A float32 parameter with logical axes; std=None means ones (norm scales)."""
  if std is None:
    value = jnp.ones(shape, jnp.float32)
  else:
    value = std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.float32)
  return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def rms_norm(x_BLD: jax.Array, scale_D: jax.Array, eps: float) -> jax.Array:
  """RMSNorm computed in float32, returned in the input dtype."""
  x = x_BLD.astype(jnp.float32)
  x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
  return (x * scale_D).astype(x_BLD.dtype)


def rotary_angles(positions_BL: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """sin and cos [B, L, 1, head_dim/2] of the rotary angles, computed once and shared by every layer."""
  half = head_dim // 2
  freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BLE = positions_BL[..., None].astype(jnp.float32) * freq
  return jnp.sin(angle_BLE)[:, :, None, :], jnp.cos(angle_BLE)[:, :, None, :]


def rotary(x_BLHE: jax.Array, sin_cos: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotary position embedding (rotate-half form) with precomputed angles."""
  sin, cos = sin_cos
  x1, x2 = jnp.split(x_BLHE.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BLHE.dtype)


def project(x_BLI: jax.Array, w: jax.Array) -> jax.Array:
  """x [B, L, *in] times a weight [*in, *out] -> [B, L, *out], as one 2-D matmul.

  Flattening to [B*L, in] x [in, out] is free (contiguous reshapes) and its gradient is two plain
  matmuls; XLA's CPU backend runs the 3-D einsum form's backward about 2x slower (layout copies).
  """
  B, L = x_BLI.shape[:2]
  n_in = math.prod(x_BLI.shape[2:])
  out = x_BLI.reshape(B * L, n_in) @ w.reshape(n_in, -1)
  return out.reshape(B, L, *w.shape[x_BLI.ndim - 2 :])


def causal_attention(q_BLHE, k_BLKE, v_BLKE, segment_ids_BL, blocks: int = 1) -> jax.Array:
  """Causal self-attention within segments, via `jax.nn.dot_product_attention`.

  With blocks > 1 (and L divisible by it), query block i attends only to keys [0, (i+1) L/blocks):
  exact, and (blocks+1)/(2 blocks) of the work, since scores above the diagonal are never computed.
  """
  length = q_BLHE.shape[1]

  def same_segment(q_slice: slice, k_end: int):
    if segment_ids_BL is None:
      return None
    return segment_ids_BL[:, None, q_slice, None] == segment_ids_BL[:, None, None, :k_end]

  if blocks == 1 or length % blocks:
    return jax.nn.dot_product_attention(q_BLHE, k_BLKE, v_BLKE, mask=same_segment(slice(None), length), is_causal=True)
  size = length // blocks
  outs = []
  for i in range(blocks):
    lo, hi = i * size, (i + 1) * size
    mask = (jnp.arange(lo, hi)[:, None] >= jnp.arange(hi)[None, :])[None, None]
    if segment_ids_BL is not None:
      mask = mask & same_segment(slice(lo, hi), hi)
    outs.append(jax.nn.dot_product_attention(q_BLHE[:, lo:hi], k_BLKE[:, :hi], v_BLKE[:, :hi], mask=mask))
  return jnp.concatenate(outs, axis=1)


class Block(nnx.Module):
  """One pre-norm Transformer layer: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    D, H, K, E, F = cfg.width, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_width
    std, out_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.depth)
    self.attn_norm = _param(rngs, (D,), ("norm",), None)
    self.wq = _param(rngs, (D, H, E), ("embed", "heads", "head_dim"), std)
    self.wk = _param(rngs, (D, K, E), ("embed", "kv_heads", "head_dim"), std)
    self.wv = _param(rngs, (D, K, E), ("embed", "kv_heads", "head_dim"), std)
    self.wo = _param(rngs, (H, E, D), ("heads", "head_dim", "embed"), out_std)
    self.mlp_norm = _param(rngs, (D,), ("norm",), None)
    if cfg.mlp == "swiglu":
      self.w_gate = _param(rngs, (D, F), ("embed", "mlp"), std)
    self.w_up = _param(rngs, (D, F), ("embed", "mlp"), std)
    self.w_down = _param(rngs, (F, D), ("mlp", "embed"), out_std)

  def attention(self, x_BLD, sin_cos, segment_ids_BL):
    dt = self.cfg.dtype
    q_BLHE = project(x_BLD, self.wq[...].astype(dt))
    k_BLKE = project(x_BLD, self.wk[...].astype(dt))
    v_BLKE = project(x_BLD, self.wv[...].astype(dt))
    q_BLHE = constrain(rotary(q_BLHE, sin_cos), ("act_batch", "act_seq", "act_heads", None))
    k_BLKE = constrain(rotary(k_BLKE, sin_cos), ("act_batch", "act_seq", "act_kv_heads", None))
    out_BLHE = causal_attention(q_BLHE, k_BLKE, v_BLKE, segment_ids_BL, self.cfg.attention_blocks)
    return project(out_BLHE, self.wo[...].astype(dt))

  def feed_forward(self, x_BLD):
    dt = self.cfg.dtype
    up_BLF = project(x_BLD, self.w_up[...].astype(dt))
    if self.cfg.mlp == "swiglu":
      gate_BLF = project(x_BLD, self.w_gate[...].astype(dt))
      h_BLF = jax.nn.silu(gate_BLF) * up_BLF
    else:
      h_BLF = jax.nn.gelu(up_BLF)
    h_BLF = constrain(h_BLF, ("act_batch", "act_seq", "act_mlp"))
    return project(h_BLF, self.w_down[...].astype(dt))

  def __call__(self, x_BLD, sin_cos, segment_ids_BL):
    eps = self.cfg.norm_eps
    x_BLD = x_BLD + self.attention(rms_norm(x_BLD, self.attn_norm[...], eps), sin_cos, segment_ids_BL)
    x_BLD = x_BLD + self.feed_forward(rms_norm(x_BLD, self.mlp_norm[...], eps))
    return constrain(x_BLD, ("act_batch", "act_seq", "act_embed"))


class Transformer(nnx.Module):
  """Token embedding, `depth` scanned blocks, final norm and output layer (tied or separate)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    V, D = cfg.vocab_size, cfg.width
    # Untied: unit-variance embeddings. Tied: std 1/sqrt(D) so logits start small, and the input
    # lookup is scaled back up by sqrt(D) (as in Gemma) so the residual stream starts at unit scale.
    self.embed = _param(rngs, (V, D), ("vocab", "embed"), 1.0 / math.sqrt(D) if cfg.tie_embeddings else 1.0)

    @nnx.split_rngs(splits=cfg.depth)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return Block(cfg, rngs)

    self.blocks = make_blocks(rngs)
    self.final_norm = _param(rngs, (D,), ("norm",), None)
    if not cfg.tie_embeddings:
      self.unembed = _param(rngs, (D, V), ("embed", "vocab"), 1.0 / math.sqrt(D))

  def __call__(self, inputs_BL, positions_BL=None, segment_ids_BL=None) -> jax.Array:
    """Returns float32 logits [B, L, V]; tokens attend only to earlier tokens of their own segment."""
    cfg = self.cfg
    if positions_BL is None:
      positions_BL = jnp.broadcast_to(jnp.arange(inputs_BL.shape[1]), inputs_BL.shape)
    x_BLD = jnp.take(self.embed[...], inputs_BL, axis=0)
    if cfg.tie_embeddings:
      x_BLD = x_BLD * math.sqrt(cfg.width)
    x_BLD = x_BLD.astype(cfg.dtype)
    x_BLD = constrain(x_BLD, ("act_batch", "act_seq", "act_embed"))

    policy = REMAT_POLICIES[cfg.remat]
    sin_cos = rotary_angles(positions_BL, cfg.head_dim, cfg.rope_theta)
    apply = (lambda blk, x: blk(x, sin_cos, segment_ids_BL))
    if cfg.remat != "none":
      apply = nnx.remat(apply, policy=policy)

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, unroll=cfg.unroll_layers or 1)
    def run_layers(x, blk):
      return apply(blk, x)

    x_BLD = rms_norm(run_layers(x_BLD, self.blocks), self.final_norm[...], cfg.norm_eps)
    if cfg.tie_embeddings:
      logits_BLV = project(x_BLD, self.embed[...].astype(cfg.dtype).T)
    else:
      logits_BLV = project(x_BLD, self.unembed[...].astype(cfg.dtype))
    return constrain(logits_BLV.astype(jnp.float32), ("act_batch", "act_seq", "act_vocab"))


def cross_entropy(logits_BLV, targets_BL, weights_BL, z_loss: float = 0.0):
  """Summed weighted next-token loss in nats (plus z-loss) and the summed weight, both float32."""
  lse_BL = jax.nn.logsumexp(logits_BLV, axis=-1)
  target_logit_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  nll_BL = lse_BL - target_logit_BL
  weights_BL = weights_BL.astype(jnp.float32)
  nll_sum = jnp.sum(nll_BL * weights_BL)
  z_sum = jnp.sum(z_loss * jnp.square(lse_BL) * weights_BL)
  return nll_sum, z_sum, jnp.sum(weights_BL)


def param_counts(cfg: ModelConfig) -> dict[str, int]:
  """Closed-form parameter counts; must equal the counts of the real parameter tree."""
  D, H, K, E, F, V = cfg.width, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_width, cfg.vocab_size
  mlp_matrices = 3 if cfg.mlp == "swiglu" else 2
  per_layer = 2 * D + D * H * E + 2 * D * K * E + H * E * D + mlp_matrices * D * F
  embedding = V * D * (1 if cfg.tie_embeddings else 2)
  non_embedding = cfg.depth * per_layer + D
  return {"total": embedding + non_embedding, "embedding": embedding, "non_embedding": non_embedding}


def tree_param_counts(params) -> dict[str, int]:
  """Counts parameters of a real (or abstract) parameter tree; embedding = input table + output layer."""
  total = embedding = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    n = math.prod(leaf.shape)
    total += n
    if any(getattr(k, "key", None) in ("embed", "unembed") for k in path):
      embedding += n
  return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
