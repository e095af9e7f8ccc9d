"""A nanodo-style peer for bench/train_step.py: the architecture of nanodo's Transformer, written here.

Flax linen; learned position embeddings, pre-LayerNorm without bias, einsum attention with a float32
softmax, GELU MLP, tied output layer, a Python loop over layers; AdamW; float32. Used only to time a
peer train step at the same shapes in the same run (nanodo itself is not on PyPI).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn


class Attention(nn.Module):
  width: int
  heads: int

  @nn.compact
  def __call__(self, x_BLD):
    head_dim = self.width // self.heads
    proj = functools.partial(nn.DenseGeneral, features=(self.heads, head_dim), use_bias=False)
    q_BLHE, k_BLHE, v_BLHE = proj(name="query")(x_BLD), proj(name="key")(x_BLD), proj(name="value")(x_BLD)
    logits_BHLL = jnp.einsum("bqhd,bkhd->bhqk", q_BLHE / head_dim**0.5, k_BLHE).astype(jnp.float32)
    length = x_BLD.shape[1]
    causal = jnp.tril(jnp.ones((1, 1, length, length), bool))
    probs_BHLL = jax.nn.softmax(jnp.where(causal, logits_BHLL, jnp.finfo(jnp.float32).min), axis=-1)
    out_BLHE = jnp.einsum("bhqk,bkhd->bqhd", probs_BHLL, v_BLHE)
    return nn.DenseGeneral(features=self.width, axis=(-2, -1), use_bias=False, name="out")(out_BLHE)


class Block(nn.Module):
  width: int
  heads: int
  mlp_width: int

  @nn.compact
  def __call__(self, x_BLD):
    x_BLD = x_BLD + Attention(self.width, self.heads)(nn.LayerNorm(use_bias=False)(x_BLD))
    h_BLF = jax.nn.gelu(nn.Dense(self.mlp_width, use_bias=False)(nn.LayerNorm(use_bias=False)(x_BLD)))
    return x_BLD + nn.Dense(self.width, use_bias=False)(h_BLF)


class PeerTransformer(nn.Module):
  vocab: int
  width: int
  depth: int
  heads: int
  mlp_width: int
  max_len: int

  @nn.compact
  def __call__(self, tokens_BL):
    embed = nn.Embed(self.vocab, self.width)
    x_BLD = embed(tokens_BL) + nn.Embed(self.max_len, self.width)(jnp.arange(tokens_BL.shape[1])[None])
    for _ in range(self.depth):
      x_BLD = Block(self.width, self.heads, self.mlp_width)(x_BLD)
    return embed.attend(nn.LayerNorm(use_bias=False)(x_BLD))


def make_peer_step(width: int, depth: int, heads: int, mlp_width: int, vocab: int, seq_len: int, batch: int):
  """(jitted step, initial (params, opt_state)) of the peer at one shape."""
  net = PeerTransformer(vocab, width, depth, heads, mlp_width, seq_len)
  params = net.init(jax.random.key(0), jnp.zeros((batch, seq_len), jnp.int32))
  optimizer = optax.adamw(1e-3, b2=0.95, weight_decay=0.1)

  def loss(p, inputs, targets):
    logits = net.apply(p, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, inputs, targets):
    p, opt_state = state
    value, grads = jax.value_and_grad(loss)(p, inputs, targets)
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), value

  return step, (params, optimizer.init(params))
