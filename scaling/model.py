"""Decoder-only Transformer LM in Flax NNX: pre-RMSNorm, rotary embeddings, GQA, SwiGLU or GELU MLP.

Parameters are float32 and carry logical axis names (see `sharding.LOGICAL_RULES`); the layers are
stacked along a leading `layers` axis and applied with `nnx.scan`, so compile time does not grow with
depth. Two parameterisations: `standard` and `mup` (maximal update, Yang et al. 2022, Tensor Programs V,
relative to `base_width`: per-layer init scales, Adam learning-rate multipliers, an output multiplier
and attention scaled by 1/head_dim in head size, standard at the base head size; see docs/model.md).
The loss is computed from the final hidden states in sequence chunks, so the float32 logits [B, L, V] of
a large vocabulary never exist at once.
Shape suffixes: B batch, L sequence, C chunk, D width, H heads, K kv heads, E head dim, F MLP width,
V vocabulary, N layers.
"""

from __future__ import annotations

import dataclasses
import functools
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
PARAMETERIZATIONS = ("standard", "mup")
HIDDEN_MATRICES = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")  # both dimensions grow with width
LOSS_CHUNK_ELEMENTS = 2**24  # automatic loss chunks: at most this many float32 logits (64 MiB) at once
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
  parameterization: str = "standard"  # 'standard' or 'mup' (relative to base_width)
  base_width: int | None = None  # mup: the width at which mup equals the standard init and learning rates
  base_head_dim: int | None = None  # mup: the head size at base width (None: head_dim, a head size fixed across widths)
  loss_chunks: int | None = None  # sequence chunks of the loss; None: automatic (LOSS_CHUNK_ELEMENTS)

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
    if self.parameterization not in PARAMETERIZATIONS:
      raise ValueError(f"model.parameterization must be one of {PARAMETERIZATIONS}, got {self.parameterization!r}")
    for name in ("base_width", "base_head_dim"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ValueError(f"model.{name} must be a positive integer or None, got {value!r}")
    if self.parameterization == "mup" and self.base_width is None:
      raise ValueError("model.parameterization='mup' needs model.base_width (the width its learning rate was tuned at)")
    if self.parameterization == "mup" and self.tie_embeddings:
      raise ValueError("model.parameterization='mup' needs untied embeddings (model.tie_embeddings = False)")
    if self.loss_chunks is not None and (not isinstance(self.loss_chunks, int) or isinstance(self.loss_chunks, bool) or self.loss_chunks < 1):
      raise ValueError(f"model.loss_chunks must be a positive integer or None (automatic), got {self.loss_chunks!r}")

  @property
  def dtype(self):
    return COMPUTE_DTYPES[self.compute_dtype]

  @property
  def width_multiplier(self) -> float:
    """width / base_width under mup (1 under standard): the m of the muP scaling rules."""
    return self.width / self.base_width if self.parameterization == "mup" else 1.0


def init_std(cfg: ModelConfig, name: str) -> float | None:
  """Initial std of a parameter by name (None: ones). mup scales hidden matrices by 1/sqrt(m), so it
  equals the standard init at base width, and keeps the output layer at its base-width std."""
  D, m = cfg.width, cfg.width_multiplier
  if name.endswith("norm"):
    return None
  if name == "embed":
    return 1.0 / math.sqrt(D) if cfg.tie_embeddings else 1.0
  if name == "unembed":
    return 1.0 / math.sqrt(D / m)
  std = cfg.init_std / math.sqrt(m)
  return std / math.sqrt(2 * cfg.depth) if name in ("wo", "w_down") else std


def lr_multiplier(cfg: ModelConfig, name: str) -> float:
  """Adam learning-rate multiplier of a parameter by name: 1/m for hidden matrices under mup, else 1."""
  return 1.0 / cfg.width_multiplier if name in HIDDEN_MATRICES else 1.0


def output_multiplier(cfg: ModelConfig) -> float:
  """Factor on the logits: 1/m under mup (the readout multiplier of muP), 1 under standard."""
  return 1.0 / cfg.width_multiplier


def attention_scale(cfg: ModelConfig) -> float | None:
  """Query-key scale: sqrt(base_head_dim)/head_dim under mup (1/head_dim in head size, and the standard
  1/sqrt(head_dim) at the base head size), None (jax's 1/sqrt(head_dim)) under standard."""
  if cfg.parameterization != "mup":
    return None
  return math.sqrt(cfg.base_head_dim or cfg.head_dim) / cfg.head_dim


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
  """(-sin | sin) and (cos | cos) [B, L, 1, head_dim] of the rotary angles, computed once and shared by every layer."""
  half = head_dim // 2
  freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BLE = positions_BL[..., None].astype(jnp.float32) * freq
  sin, cos = jnp.sin(angle_BLE)[:, :, None, :], jnp.cos(angle_BLE)[:, :, None, :]
  return jnp.concatenate([-sin, sin], axis=-1), jnp.concatenate([cos, cos], axis=-1)


def rotary(x_BLHE: jax.Array, sin_cos: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotary position embedding (rotate-half form): x * (cos|cos) + (x2|x1) * (-sin|sin).

  The same values as [x1 cos - x2 sin, x2 cos + x1 sin], but the halves are swapped by a reshape and a
  reverse instead of split and concatenate, which XLA CPU runs as one fused pass (~3% of a 20M step).
  """
  sin, cos = sin_cos
  x = x_BLHE.astype(jnp.float32)
  swapped = jnp.flip(x.reshape(*x.shape[:-1], 2, x.shape[-1] // 2), axis=-2).reshape(x.shape)
  return (x * cos + swapped * sin).astype(x_BLHE.dtype)


def project(x_BLI: jax.Array, w: jax.Array, preferred_element_type=None) -> jax.Array:
  """x [B, L, *in] times a weight [*in, *out] -> [B, L, *out], as one 2-D matmul.

  Flattening to [B*L, in] x [in, out] is free (contiguous reshapes) and its gradient is two plain
  matmuls; XLA's CPU backend runs the 3-D einsum form's backward about 2x slower (layout copies).
  `preferred_element_type` sets the accumulation and output dtype (float32 logits from bf16 inputs).
  """
  B, L = x_BLI.shape[:2]
  n_in = math.prod(x_BLI.shape[2:])
  out = jnp.matmul(x_BLI.reshape(B * L, n_in), w.reshape(n_in, -1), preferred_element_type=preferred_element_type)
  return out.reshape(B, L, *w.shape[x_BLI.ndim - 2 :])


def causal_attention(q_BLHE, k_BLKE, v_BLKE, segment_ids_BL, blocks: int = 1, scale: float | None = None) -> jax.Array:
  """Causal self-attention within segments; heads may share key/value heads (H a multiple of K).

  Scores and softmax are float32. The queries are scaled before the product (on [.., E], not on the
  scores), the softmax is normalised after the value product (on [.., E] instead of [.., keys]), and its
  max is a constant to autodiff (softmax does not depend on it): on XLA CPU this makes the 20M bench step
  ~10% faster than `jax.nn.dot_product_attention`, with the same values to float rounding.
  With blocks > 1, query block i attends only to keys [0, (i+1) L/blocks): exact, and
  (blocks+1)/(2 blocks) of the work, since scores above the diagonal are never computed; L must be a
  multiple of blocks. `scale` multiplies q.k (None: 1/sqrt(head_dim)).
  """
  B, L, H, E = q_BLHE.shape
  K = k_BLKE.shape[2]
  G = H // K  # query heads per key/value head
  if L % blocks:
    raise ValueError(f"model.attention_blocks={blocks} does not divide the sequence length {L}")
  scale = 1.0 / math.sqrt(E) if scale is None else scale
  q_BLHE = (q_BLHE.astype(jnp.float32) * scale).astype(q_BLHE.dtype)
  q_BKGLE = q_BLHE.reshape(B, L, K, G, E).transpose(0, 2, 3, 1, 4)
  k_BKLE, v_BKLE = (jnp.swapaxes(a, 1, 2) for a in (k_BLKE, v_BLKE))
  size = L // blocks
  outs = []
  for i in range(blocks):
    lo, hi = i * size, (i + 1) * size
    q_BKME = q_BKGLE[:, :, :, lo:hi].reshape(B, K, G * size, E)  # M: the G query heads' rows of this block
    s_BKGQS = jnp.einsum(
        "bkme,bkse->bkms", q_BKME, k_BKLE[:, :, :hi], preferred_element_type=jnp.float32
    ).reshape(B, K, G, size, hi)
    mask = (jnp.arange(lo, hi)[:, None] >= jnp.arange(hi)[None, :])[None, None, None]
    if segment_ids_BL is not None:
      mask = mask & (segment_ids_BL[:, None, None, lo:hi, None] == segment_ids_BL[:, None, None, None, :hi])
    s_BKGQS = jnp.where(mask, s_BKGQS, jnp.finfo(jnp.float32).min)
    p_BKGQS = jnp.exp(s_BKGQS - jax.lax.stop_gradient(jnp.max(s_BKGQS, axis=-1, keepdims=True)))
    o_BKME = jnp.einsum(
        "bkms,bkse->bkme", p_BKGQS.reshape(B, K, G * size, hi).astype(v_BKLE.dtype), v_BKLE[:, :, :hi],
        preferred_element_type=jnp.float32,
    )
    o_BKGQE = o_BKME.reshape(B, K, G, size, E) / jnp.sum(p_BKGQS, axis=-1, keepdims=True)
    outs.append(o_BKGQE.astype(q_BLHE.dtype))
  o_BKGLE = jnp.concatenate(outs, axis=3)
  return o_BKGLE.transpose(0, 3, 1, 2, 4).reshape(B, L, H, E)


class Block(nnx.Module):
  """One pre-norm Transformer layer: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    D, H, K, E, F = cfg.width, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_width
    std = functools.partial(init_std, cfg)
    self.attn_norm = _param(rngs, (D,), ("norm",), None)
    self.wq = _param(rngs, (D, H, E), ("embed", "heads", "head_dim"), std("wq"))
    self.wk = _param(rngs, (D, K, E), ("embed", "kv_heads", "head_dim"), std("wk"))
    self.wv = _param(rngs, (D, K, E), ("embed", "kv_heads", "head_dim"), std("wv"))
    self.wo = _param(rngs, (H, E, D), ("heads", "head_dim", "embed"), std("wo"))
    self.mlp_norm = _param(rngs, (D,), ("norm",), None)
    if cfg.mlp == "swiglu":
      self.w_gate = _param(rngs, (D, F), ("embed", "mlp"), std("w_gate"))
    self.w_up = _param(rngs, (D, F), ("embed", "mlp"), std("w_up"))
    self.w_down = _param(rngs, (F, D), ("mlp", "embed"), std("w_down"))

  def attention(self, x_BLD, sin_cos, segment_ids_BL):
    dt = self.cfg.dtype
    q_BLHE = project(x_BLD, self.wq[...].astype(dt))
    k_BLKE = project(x_BLD, self.wk[...].astype(dt))
    v_BLKE = project(x_BLD, self.wv[...].astype(dt))
    q_BLHE = constrain(rotary(q_BLHE, sin_cos), ("act_batch", "act_seq", "act_heads", None))
    k_BLKE = constrain(rotary(k_BLKE, sin_cos), ("act_batch", "act_seq", "act_kv_heads", None))
    out_BLHE = causal_attention(
        q_BLHE, k_BLKE, v_BLKE, segment_ids_BL, self.cfg.attention_blocks, attention_scale(self.cfg)
    )
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


def unstack_layers(stacked: Block, depth: int) -> nnx.List:
  """The `depth` layers of a stacked (vmapped) Block as separate Blocks, with the same values.

  Unrolled models keep their layers this way: a layer's weights are then their own buffers, whereas
  slicing a stacked [depth, ...] parameter copies every weight in the forward pass and concatenates every
  gradient in the backward pass (~7% of a 20M-parameter step on CPU).
  """
  graphdef, state = nnx.split(stacked)

  def layer(i: int) -> Block:
    take = lambda v: v.replace(v.get_value()[i], out_sharding=v.out_sharding[1:] if v.out_sharding else None)
    return nnx.merge(graphdef, jax.tree.map(take, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))

  return nnx.List([layer(i) for i in range(depth)])


class Transformer(nnx.Module):
  """Token embedding, `depth` scanned blocks, final norm and output layer (tied or separate)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    V, D = cfg.vocab_size, cfg.width
    # Untied: unit-variance embeddings. Tied: std 1/sqrt(D) so logits start small, and the input
    # lookup is scaled back up by sqrt(D) (as in Gemma) so the residual stream starts at unit scale.
    self.embed = _param(rngs, (V, D), ("vocab", "embed"), init_std(cfg, "embed"))

    @nnx.split_rngs(splits=cfg.depth)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return Block(cfg, rngs)

    self.blocks = unstack_layers(make_blocks(rngs), cfg.depth) if cfg.unroll_layers else make_blocks(rngs)
    self.final_norm = _param(rngs, (D,), ("norm",), None)
    if not cfg.tie_embeddings:
      self.unembed = _param(rngs, (D, V), ("embed", "vocab"), init_std(cfg, "unembed"))

  def hidden(self, inputs_BL, positions_BL=None, segment_ids_BL=None) -> jax.Array:
    """Final normed hidden states [B, L, D] in the compute dtype; tokens see only earlier tokens of their segment."""
    cfg = self.cfg
    if positions_BL is None:
      positions_BL = jnp.broadcast_to(jnp.arange(inputs_BL.shape[1]), inputs_BL.shape)
    x_BLD = self.embedding(inputs_BL)

    policy = REMAT_POLICIES[cfg.remat]
    sin_cos = rotary_angles(positions_BL, cfg.head_dim, cfg.rope_theta)
    apply = (lambda blk, x: blk(x, sin_cos, segment_ids_BL))
    if cfg.remat != "none":
      apply = nnx.remat(apply, policy=policy)

    if cfg.unroll_layers:
      for blk in self.blocks:
        x_BLD = apply(blk, x_BLD)
    else:

      @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
      def run_layers(x, blk):
        return apply(blk, x)

      x_BLD = run_layers(x_BLD, self.blocks)
    return rms_norm(x_BLD, self.final_norm[...], cfg.norm_eps)

  def embedding(self, inputs_BL) -> jax.Array:
    """The input embedding [B, L, D] in the compute dtype (scaled by sqrt(D) when tied)."""
    cfg = self.cfg
    x_BLD = jnp.take(self.embed[...], inputs_BL, axis=0)
    if cfg.tie_embeddings:
      x_BLD = x_BLD * math.sqrt(cfg.width)
    return constrain(x_BLD.astype(cfg.dtype), ("act_batch", "act_seq", "act_embed"))

  def output_matrix(self) -> jax.Array:
    """The output layer [D, V] in the compute dtype (the embedding table transposed when tied)."""
    w_DV = self.embed[...].T if self.cfg.tie_embeddings else self.unembed[...]
    return w_DV.astype(self.cfg.dtype)

  def __call__(self, inputs_BL, positions_BL=None, segment_ids_BL=None) -> jax.Array:
    """Returns float32 logits [B, L, V] (whole; training uses `loss_sums`, which never holds them all)."""
    x_BLD = self.hidden(inputs_BL, positions_BL, segment_ids_BL)
    return unembed_logits(x_BLD, self.output_matrix(), output_multiplier(self.cfg))

  def loss_sums(self, inputs_BL, targets_BL, weights_BL, positions_BL=None, segment_ids_BL=None, z_loss: float = 0.0):
    """(summed nll, summed z-loss, summed weight) of next-token prediction, the logits chunked over L."""
    x_BLD = self.hidden(inputs_BL, positions_BL, segment_ids_BL)
    chunks = self.cfg.loss_chunks or auto_loss_chunks(*targets_BL.shape, self.cfg.vocab_size)
    return chunked_cross_entropy(
        x_BLD, self.output_matrix(), targets_BL, weights_BL, z_loss, chunks, output_multiplier(self.cfg)
    )


def unembed_logits(x_BLD: jax.Array, w_DV: jax.Array, multiplier: float = 1.0) -> jax.Array:
  """float32 logits of hidden states: the matmul accumulates and returns float32 (no bf16 rounding)."""
  logits_BLV = project(x_BLD, w_DV, preferred_element_type=jnp.float32)
  if multiplier != 1.0:
    logits_BLV = logits_BLV * multiplier
  return constrain(logits_BLV, ("act_batch", "act_seq", "act_vocab"))


def cross_entropy(logits_BLV, targets_BL, weights_BL, z_loss: float = 0.0):
  """Summed weighted next-token loss in nats (plus z-loss) and the summed weight, both float32."""
  lse_BL = jax.nn.logsumexp(logits_BLV, axis=-1)
  target_logit_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  nll_BL = lse_BL - target_logit_BL
  weights_BL = weights_BL.astype(jnp.float32)
  nll_sum = jnp.sum(nll_BL * weights_BL)
  z_sum = jnp.sum(z_loss * jnp.square(lse_BL) * weights_BL)
  return nll_sum, z_sum, jnp.sum(weights_BL)


def auto_loss_chunks(batch: int, length: int, vocab: int, max_elements: int = LOSS_CHUNK_ELEMENTS) -> int:
  """The fewest sequence chunks (a divisor of length) whose logits [B, L/chunks, V] fit in max_elements."""
  for chunks in range(1, length + 1):
    if length % chunks == 0 and batch * (length // chunks) * vocab <= max_elements:
      return chunks
  return length


def chunked_cross_entropy(x_BLD, w_DV, targets_BL, weights_BL, z_loss: float, chunks: int, multiplier: float = 1.0):
  """`cross_entropy` of `unembed_logits`, one sequence chunk at a time.

  Each chunk's logits are rematerialised in the backward pass (`jax.checkpoint`), so neither pass holds
  more than [B, L/chunks, V] float32 logits; chunks=1 is the plain unchunked loss.
  """
  if chunks == 1:
    return cross_entropy(unembed_logits(x_BLD, w_DV, multiplier), targets_BL, weights_BL, z_loss)
  B, L, D = x_BLD.shape
  if L % chunks:
    raise ValueError(f"model.loss_chunks={chunks} does not divide the sequence length {L}")

  def split(a):
    return a.reshape(B, chunks, L // chunks, *a.shape[2:]).swapaxes(0, 1)

  @jax.checkpoint
  def one_chunk(w, x_BCD, t_BC, m_BC):
    return cross_entropy(unembed_logits(x_BCD, w, multiplier), t_BC, m_BC, z_loss)

  sums = jax.lax.map(lambda xs: one_chunk(w_DV, *xs), (split(x_BLD), split(targets_BL), split(weights_BL)))
  return tuple(jnp.sum(s) for s in sums)


def activation_rms(model: Transformer, inputs_BL) -> dict[str, jax.Array]:
  """RMS of the embedding output, every block's attention and MLP outputs and the logits (coordinate checks)."""
  cfg = model.cfg
  positions_BL = jnp.broadcast_to(jnp.arange(inputs_BL.shape[1]), inputs_BL.shape)
  sin_cos = rotary_angles(positions_BL, cfg.head_dim, cfg.rope_theta)
  rms = lambda a: jnp.sqrt(jnp.mean(jnp.square(a.astype(jnp.float32))))
  x_BLD = model.embedding(inputs_BL)
  out = {"embedding": rms(x_BLD)}
  layers = model.blocks if cfg.unroll_layers else unstack_layers(model.blocks, cfg.depth)
  for i, blk in enumerate(layers):
    attn_BLD = blk.attention(rms_norm(x_BLD, blk.attn_norm[...], cfg.norm_eps), sin_cos, None)
    x_BLD = x_BLD + attn_BLD
    mlp_BLD = blk.feed_forward(rms_norm(x_BLD, blk.mlp_norm[...], cfg.norm_eps))
    x_BLD = x_BLD + mlp_BLD
    out[f"block{i}_attention"], out[f"block{i}_mlp"] = rms(attn_BLD), rms(mlp_BLD)
  x_BLD = rms_norm(x_BLD, model.final_norm[...], cfg.norm_eps)
  out["logits"] = rms(unembed_logits(x_BLD, model.output_matrix(), output_multiplier(cfg)))
  return out


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
