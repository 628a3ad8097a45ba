"""BOW-MLP ranker: bag-of-n-grams cell vectors, MLP heads, two formulations.

Input: a notebook batch from `jaxrank.data.batching` (code cells first, so code
cell k is row k). Each cell is a bag of TF-IDF terms (`ids`, `weights`).

  cell encoder   h_c = MLP(sum_k w_ck * E[id_ck] + type_emb)       [B, C, D]
  context        ctx = mean of code-cell vectors (the notebook's code context)
  pointwise      key_m = sigmoid(<w, tfidf_m> [+ MLP([h_m, ctx, h_m * ctx])])   in (0, 1)
  gap            logit_mg = MLP(pair features of m and g)              g = 0..n_code
                          [+ <q(h_m, ctx), k(code_{g-1}, code_g, pos_g)> / sqrt(D)]

The pointwise head regresses the markdown cell's key (see `jaxrank.decode`)
with an L1 loss, as the public baseline did. The gap head is a softmax over the
n_code + 1 gaps between code cells ("which code cell does this markdown cell
precede"), trained with cross-entropy plus the expected fraction of misplaced
code cells, and decoded by the least expected number of misplaced
markdown/code pairs (`decode.keys_from_gap_probs`). Its pair features are the
distance of gap g from the pointwise prediction (a learned position prior) and
the TF-IDF cosine of the markdown cell with the code cells on either side of
the gap: parameter-free evidence that transfers to unseen repositories, where
the learned bilinear term (optional) mostly memorises the training ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrank import decode
from jaxrank.models import pairs

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BowMlpConfig:
  vocab_size: int = 30_001
  embed_dim: int = 128
  hidden_dim: int = 256
  num_layers: int = 2
  dropout: float = 0.1
  term_dropout: float = 0.1  # drop whole terms of a bag while training
  use_similarity: bool = True  # TF-IDF cosine of markdown vs the code cells around each gap
  use_bilinear: bool = True  # learned <query(markdown), key(gap)> term of the gap logits
  key_mlp: bool = True  # False: the key is linear in the TF-IDF terms (ridge-like) only
  pair_hidden: int = 32  # MLP over (markdown, gap) pair features
  pair_layers: int = 2
  gap_loss_weight: float = 1.0
  key_loss_weight: float = 1.0
  emd_loss_weight: float = 1.0
  decode: str = "gap"  # "gap" or "pointwise"
  # Decode-time price (in misplaced code cells) of each further markdown cell
  # sharing a gap: `decode.crowded_gaps`. 0 = independent medians.
  crowding: float = 2.0
  dtype: Any = jnp.float32


class Mlp(nn.Module):
  hidden: int
  out: int
  layers: int = 2
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    for _ in range(self.layers - 1):
      x = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.Dense(self.out, dtype=self.dtype)(x)


class BagEncoder(nn.Module):
  """Embedding-bag cell encoder: weighted sum of term embeddings, then an MLP."""

  vocab_size: int
  embed_dim: int
  out_dim: int
  num_layers: int = 2
  dropout: float = 0.0
  term_dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids_BxCxK, weights_BxCxK, is_code_BxC, deterministic=True):
    if self.term_dropout > 0 and not deterministic:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - self.term_dropout,
                                  weights_BxCxK.shape)
      weights_BxCxK = jnp.where(keep, weights_BxCxK, 0)
    emb = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="terms")
    x_BxCxE = jnp.einsum("bcke,bck->bce", emb(ids_BxCxK), weights_BxCxK.astype(self.dtype))
    x_BxCxE = x_BxCxE + nn.Embed(2, self.embed_dim, dtype=self.dtype, name="type")(
        is_code_BxC.astype(jnp.int32))
    x_BxCxE = nn.LayerNorm(dtype=self.dtype)(x_BxCxE)
    return Mlp(self.out_dim, self.out_dim, self.num_layers, self.dropout, self.dtype)(
        x_BxCxE, deterministic)


def _fourier(pos, n: int = 8):
  """Fixed Fourier features of positions in [0, 1]: [..., 2n]."""
  freqs = jnp.pi * (2.0 ** jnp.arange(n))
  ang = pos[..., None] * freqs
  return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], -1)


class BowMlpRanker(nn.Module):
  config: BowMlpConfig

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], deterministic: bool = True):
    cfg = self.config
    d = cfg.hidden_dim
    is_code, mask = batch["is_code"], batch["cell_mask"]
    n_code_B = batch["n_code"]
    B, C = is_code.shape
    if cfg.key_mlp or cfg.use_bilinear:  # the learned cell encoder feeds only these
      h_BxCxD = BagEncoder(cfg.vocab_size, cfg.embed_dim, d, cfg.num_layers, cfg.dropout,
                           cfg.term_dropout, cfg.dtype, name="cells")(
                               batch["ids"], batch["weights"], is_code, deterministic)
      code_w = (is_code & mask).astype(h_BxCxD.dtype)
      ctx_BxD = jnp.einsum("bcd,bc->bd", h_BxCxD, code_w) / jnp.maximum(n_code_B, 1)[:, None]
      ctx_BxCxD = jnp.broadcast_to(ctx_BxD[:, None], h_BxCxD.shape)
      feats = jnp.concatenate([h_BxCxD, ctx_BxCxD, h_BxCxD * ctx_BxCxD], -1)

    # Pointwise: relative key of each cell (used for markdown cells): a linear
    # model of its TF-IDF terms (what a ridge regression of position on the
    # text alone learns), plus optionally an MLP of the cell and its code context.
    weights = batch["weights"]
    if cfg.term_dropout > 0 and not deterministic:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - cfg.term_dropout, weights.shape)
      weights = jnp.where(keep, weights, 0) / (1 - cfg.term_dropout)
    linear_BxC = jnp.einsum("bck,bck->bc", nn.Embed(cfg.vocab_size, 1, name="key_linear")(
        batch["ids"])[..., 0], weights)
    if cfg.key_mlp:
      linear_BxC += Mlp(d, 1, 2, cfg.dropout, cfg.dtype, name="key_head")(
          feats, deterministic)[..., 0].astype(jnp.float32)
    key_BxC = nn.sigmoid(linear_BxC + self.param("key_bias", nn.initializers.zeros, ()))

    # Gap g sits between code cell g-1 and code cell g (rows g-1 and g).
    g_idx, valid_BxG, is_end_BxG, centre_BxG = pairs.gaps(n_code_B, C)
    logits_BxCxG = jnp.zeros((B, C, C + 1), jnp.float32)
    if cfg.use_bilinear:
      start = self.param("start", nn.initializers.normal(0.02), (d,))
      end = self.param("end", nn.initializers.normal(0.02), (d,))
      code_h = jnp.where(code_w[..., None] > 0, h_BxCxD, 0)
      prev_BxGxD = jnp.concatenate([jnp.broadcast_to(start, (B, 1, d)), code_h], 1)
      nxt_BxGxD = jnp.concatenate([code_h, jnp.zeros((B, 1, d), code_h.dtype)], 1)
      nxt_BxGxD = jnp.where(is_end_BxG[..., None], end.astype(code_h.dtype), nxt_BxGxD)
      gap_in = jnp.concatenate([prev_BxGxD, nxt_BxGxD, _fourier(centre_BxG).astype(cfg.dtype)], -1)
      k_BxGxD = Mlp(d, d, 2, cfg.dropout, cfg.dtype, name="gap_key")(gap_in, deterministic)
      q_BxCxD = Mlp(d, d, 2, cfg.dropout, cfg.dtype, name="gap_query")(feats, deterministic)
      logits_BxCxG += jnp.einsum("bcd,bgd->bcg", q_BxCxD, k_BxGxD).astype(jnp.float32) / np.sqrt(d)
    # Pair features of (markdown m, gap g), fed to a small MLP shared by all
    # pairs: distance from the pointwise prediction (the position prior; its
    # shape is learned, not fixed), and the TF-IDF similarity to the code cell
    # after the gap (row g) and before it (row g-1), zero at the notebook's ends.
    feats_pair = pairs.prior_features(key_BxC, centre_BxG, n_code_B)
    feats_pair.append(jnp.broadcast_to(centre_BxG[:, None, :], feats_pair[0].shape))
    if cfg.use_similarity:
      sim = batch["sim"].astype(jnp.float32)
      zeros = jnp.zeros((B, C, 1), jnp.float32)
      sim_next = jnp.where(is_end_BxG[:, None, :], 0.0, jnp.concatenate([sim, zeros], -1))
      sim_prev = jnp.concatenate([zeros, sim], -1)
      sim_prev = jnp.where(g_idx[None, None, :] > n_code_B[:, None, None], 0.0, sim_prev)
      # Relative evidence: this gap's similarity against the best gap of the
      # same markdown cell (the "most similar code cell" heuristic).
      best = jnp.max(jnp.where(valid_BxG[:, None, :], sim_next, 0.0), -1, keepdims=True)
      is_best = ((sim_next >= best) & (best > 0)).astype(jnp.float32)
      # Rank of this gap's similarity among the markdown cell's gaps, in [0, 1].
      n1 = n_code_B[:, None, None] + 1.0
      masked = jnp.where(valid_BxG[:, None, :], sim_next, -1.0)
      rank = jnp.argsort(jnp.argsort(-masked, axis=-1), axis=-1) / n1  # 0 = most similar
      feats_pair += [sim_next, sim_prev, sim_next / (best + 1e-3), is_best, rank]
    h = jnp.stack(feats_pair, -1)
    for i in range(cfg.pair_layers):
      h = nn.gelu(nn.Dense(cfg.pair_hidden, name=f"pair_{i}")(h))
    logits_BxCxG += nn.Dense(1, name="pair_out")(h)[..., 0]
    logits_BxCxG = jnp.where(valid_BxG[:, None, :], logits_BxCxG, -1e9)
    return {"key": key_BxC, "gap_logits": logits_BxCxG}


def build(config: BowMlpConfig) -> nn.Module:
  return BowMlpRanker(config)


def loss_fn(outputs: Mapping[str, Array], batch: Mapping[str, Array],
            config: BowMlpConfig) -> tuple[Array, dict[str, Array]]:
  """Mean over markdown cells of CE(gap) and L1(key); padding cells ignored."""
  md = (batch["cell_mask"] & ~batch["is_code"]).astype(jnp.float32)
  n_md = jnp.maximum(md.sum(), 1.0)
  l1 = jnp.abs(outputs["key"] - batch["target_key"])
  key_loss = (l1 * md).sum() / n_md
  logp = jax.nn.log_softmax(outputs["gap_logits"], -1)
  tgt = jnp.maximum(batch["target_gap"], 0)
  nll = -jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0]
  gap_loss = (nll * md).sum() / n_md
  gap_acc = ((outputs["gap_logits"].argmax(-1) == batch["target_gap"]) * md).sum() / n_md
  # Expected fraction of code cells on the wrong side of the markdown cell:
  # E_p |g - g*| / (n_code + 1), what the median decoding minimises.
  g = jnp.arange(logp.shape[-1])
  dist = jnp.abs(g[None, None, :] - tgt[..., None]) / (batch["n_code"][:, None, None] + 1.0)
  emd_loss = ((jnp.exp(logp) * dist).sum(-1) * md).sum() / n_md
  loss = (config.key_loss_weight * key_loss + config.gap_loss_weight * gap_loss
          + config.emd_loss_weight * emd_loss)
  return loss, {"loss": loss, "key_l1": key_loss, "gap_nll": gap_loss, "gap_emd": emd_loss,
                "gap_acc": gap_acc, "n_markdown": md.sum()}


def markdown_belief(outputs: Mapping[str, np.ndarray], row: int, n_code: int, n_md: int,
                    config: BowMlpConfig) -> tuple[np.ndarray | None, np.ndarray]:
  """(gap probabilities [n_md, n_code + 1] or None when decoding pointwise, keys [n_md])
  of one notebook's markdown cells (rows n_code..n_code+n_md); `jaxrank.ensemble` averages them."""
  key = np.asarray(outputs["key"][row, n_code:n_code + n_md], np.float64)
  if config.decode == "pointwise" or n_md == 0:
    return None, key
  logits = np.asarray(outputs["gap_logits"][row, n_code:n_code + n_md, : n_code + 1], np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return probs, key


def markdown_keys(outputs: Mapping[str, np.ndarray], row: int, n_code: int, n_md: int,
                  config: BowMlpConfig) -> np.ndarray:
  """Keys of one notebook's markdown cells (rows n_code..n_code+n_md) for decoding."""
  probs, key = markdown_belief(outputs, row, n_code, n_md, config)
  return decode.keys_from_belief(probs, key, config.crowding)
