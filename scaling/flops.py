"""Training FLOPs per token under each counting convention, and model FLOP utilisation (MFU).

Conventions (training = forward + backward, per token of a sequence of length T):
- `6N`: 6 x non-embedding parameters (Kaplan et al. 2020).
- `6N_total`: 6 x all parameters, embeddings and output layer included.
- `chinchilla`: Hoffmann et al. 2022, appendix F: 3 x the forward FLOPs of the embedding, the
  QKV/output projections, full (non-causal) attention logits and values, softmax, MLP and output layer.
- `palm`: 6 x (non-embedding + output-layer parameters) + 12 x depth x heads x head_dim x T
  (Chowdhery et al. 2022, appendix B); the convention our `mfu` and `flops_per_s` use.
- `xla`: the compiled train step's own `cost_analysis()` FLOPs divided by the tokens of a step.
"""

from __future__ import annotations

from scaling.model import ModelConfig, param_counts

MFU_CONVENTION = "palm"


def flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, float]:
  """Training FLOPs per token under every analytic convention (all but `xla`)."""
  counts = param_counts(cfg)
  D, H, K, E, F, V, T = cfg.width, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_width, cfg.vocab_size, seq_len
  mlp_matrices = 3 if cfg.mlp == "swiglu" else 2
  forward = (
      2 * V * D  # embedding (counted as a matmul, as Chinchilla does)
      + cfg.depth * (
          2 * D * (H + 2 * K) * E  # q, k, v projections
          + 2 * T * H * E  # q k^T
          + 3 * H * T  # softmax
          + 2 * T * H * E  # attention-weighted values
          + 2 * H * E * D  # output projection
          + 2 * mlp_matrices * D * F  # MLP
      )
      + 2 * D * V  # output layer
  )
  return {
      "6N": 6.0 * counts["non_embedding"],
      "6N_total": 6.0 * counts["total"],
      "chinchilla": 3.0 * forward,
      "palm": 6.0 * (counts["non_embedding"] + V * D) + 12.0 * cfg.depth * H * E * T,
  }


def xla_flops(stage) -> float | None:
  """FLOPs of a lowered or compiled computation from XLA's cost analysis (None when there are none).

  XLA counts a while-loop body once, whatever its trip count: lower with loops unrolled to count all.
  """
  try:
    analysis = stage.cost_analysis()
  except Exception:  # some backends do not implement cost analysis
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None
