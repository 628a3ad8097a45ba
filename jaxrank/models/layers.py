"""Layers the ranker families compose: MLP, Fourier features, the bag encoder and the gap head.

The gap head (`bow_mlp`, `rankers` "roberta_cells", `diffusion` with
head="gap"): per markdown cell m a softmax over the n_code + 1 gaps between
code cells ("which code cell does m precede"; gap g lies between code rows
g-1 and g, `pairs.gaps`),

  logit_mg = MLP_pair(pair features of (m, g))
             [+ <q(h_m), k(h_code g-1, h_code g)> / sqrt(D)   the bilinear term]

trained with cross-entropy of the true gap plus the expected fraction of
misplaced code cells (`gap_loss`), and decoded by the least expected number of
misplaced markdown/code pairs (`gap_markdown_belief` -> `decode.keys_from_belief`).

The head's pieces are functions called inside a family's `nn.compact` method:
the sub-modules they create ("pair_0", "pair_out", "gap_key", ...) belong to
that family's module, so every family keeps its parameter names (and its
checkpoints) while the code exists once.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrank.models import pairs

Array = jax.Array


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


def fourier(x, n: int = 8, *, scale: float = jnp.pi, raw: bool = False):
  """Fixed Fourier features sin/cos(x * scale * 2^k), k < n: [..., 2n] (+1 with the raw value)."""
  freqs = scale * (2.0 ** jnp.arange(n))
  ang = x[..., None] * freqs
  parts = [jnp.sin(ang), jnp.cos(ang)]
  return jnp.concatenate([x[..., None]] + parts if raw else parts, -1)


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


def with_context(h_BxCxD: Array, code_w_BxC: Array, n_code_B: Array) -> Array:
  """[h, ctx, h * ctx] per cell, ctx = the mean code-cell vector (the notebook's code context)."""
  ctx_BxD = (jnp.einsum("bcd,bc->bd", h_BxCxD, code_w_BxC.astype(h_BxCxD.dtype))
             / jnp.maximum(n_code_B, 1)[:, None])
  ctx_BxCxD = jnp.broadcast_to(ctx_BxD[:, None], h_BxCxD.shape)
  return jnp.concatenate([h_BxCxD, ctx_BxCxD, h_BxCxD * ctx_BxCxD], -1)


# --- the gap head -----------------------------------------------------------------------
def gap_neighbours(module: nn.Module, code_h_BxCxD: Array, is_end_BxG: Array
                   ) -> tuple[Array, Array]:
  """(code state before gap g, after it) [B, G, D]: learned `start` / `end` vectors at the
  notebook's ends (parameters of `module`). `code_h` is zero on non-code rows."""
  B, _, d = code_h_BxCxD.shape
  dtype = code_h_BxCxD.dtype
  start = module.param("start", nn.initializers.normal(0.02), (d,)).astype(dtype)
  end = module.param("end", nn.initializers.normal(0.02), (d,)).astype(dtype)
  prev = jnp.concatenate([jnp.broadcast_to(start, (B, 1, d)), code_h_BxCxD], 1)
  nxt = jnp.concatenate([code_h_BxCxD, jnp.zeros((B, 1, d), dtype)], 1)
  return prev, jnp.where(is_end_BxG[..., None], end, nxt)


def bilinear_gap_term(module: nn.Module, query_in: Array, h_BxCxD: Array, code_BxC: Array,
                      grid: pairs.Gaps, *, dropout: float, dtype, deterministic: bool,
                      gap_extra: Array | None = None) -> Array:
  """<q(m), k(code g-1, code g, pos g[, gap_extra g])> / sqrt(D), [B, C, G]: MLPs
  "gap_query"/"gap_key"; `gap_extra` [B, G, E] is more of each gap's description."""
  d = h_BxCxD.shape[-1]
  code_h = jnp.where(code_BxC[..., None], h_BxCxD, 0)
  prev, nxt = gap_neighbours(module, code_h, grid.is_end)
  gap_in = [prev, nxt, fourier(grid.centre).astype(code_h.dtype)]
  if gap_extra is not None:
    gap_in.append(gap_extra.astype(code_h.dtype))
  gap_in = jnp.concatenate(gap_in, -1)
  k_BxGxD = Mlp(d, d, 2, dropout, dtype, name="gap_key")(gap_in, deterministic)
  q_BxCxD = Mlp(d, d, 2, dropout, dtype, name="gap_query")(query_in, deterministic)
  return jnp.einsum("bcd,bgd->bcg", q_BxCxD, k_BxGxD).astype(jnp.float32) / np.sqrt(d)


def prior_and_centre(key_BxC: Array, grid: pairs.Gaps, n_code_B: Array) -> list[Array]:
  """Pair features of the position prior: distances of g from the key, and g's centre."""
  feats = pairs.prior_features(key_BxC, grid.centre, n_code_B)
  return feats + [jnp.broadcast_to(grid.centre[:, None, :], feats[0].shape)]


def pair_logits(feats: Sequence[Array], grid: pairs.Gaps, *, hidden: int, layers: int,
                extra: Array | None = None) -> Array:
  """Gap logits [B, C, G]: a small MLP ("pair_i", "pair_out") shared by all (m, g) pairs over
  their parameter-free features, plus `extra` (e.g. the bilinear term); invalid gaps -1e9."""
  h = jnp.stack(feats, -1)
  for i in range(layers):
    h = nn.gelu(nn.Dense(hidden, name=f"pair_{i}")(h))
  logits = nn.Dense(1, name="pair_out")(h)[..., 0]
  if extra is not None:
    logits = extra + logits
  return jnp.where(grid.valid[:, None, :], logits, -1e9)


def gap_head(module: nn.Module, key_BxC: Array, query_in: Array | None, h_BxCxD: Array | None,
             code_BxC: Array, n_code_B: Array, similarity, cfg, deterministic: bool,
             gap_extra=None) -> Array:
  """Gap logits [B, C, G] of the BOW-MLP and the cell ranker: the position-prior features
  of `key`, plus `similarity(grid)` (a list of [B, C, G] features) with
  cfg.use_similarity, through the pair MLP (cfg.pair_hidden x cfg.pair_layers), plus the
  bilinear term of `query_in` and the code cells' `h` (and `gap_extra(grid)`, [B, G, E],
  when given) with cfg.use_bilinear."""
  grid = pairs.gaps(n_code_B, key_BxC.shape[1])
  bilinear = (bilinear_gap_term(module, query_in, h_BxCxD, code_BxC, grid, dropout=cfg.dropout,
                                dtype=cfg.dtype, deterministic=deterministic,
                                gap_extra=gap_extra(grid) if gap_extra else None)
              if cfg.use_bilinear else None)
  feats = prior_and_centre(key_BxC, grid, n_code_B)
  if cfg.use_similarity:
    feats += similarity(grid)
  return pair_logits(feats, grid, hidden=cfg.pair_hidden, layers=cfg.pair_layers, extra=bilinear)


def markdown_mask(batch: Mapping[str, Array]) -> Array:
  """1.0 on real markdown cells, [B, C] (what every loss averages over)."""
  return (batch["cell_mask"] & ~batch["is_code"]).astype(jnp.float32)


def key_l1(key_BxC: Array, batch: Mapping[str, Array]) -> Array:
  """Mean |key - target key| over markdown cells."""
  md = markdown_mask(batch)
  return (jnp.abs(key_BxC - batch["target_key"]) * md).sum() / jnp.maximum(md.sum(), 1.0)


SIZE_UNIT = 16.0  # gap_loss's size weighting: code cells of a typical notebook


def gap_loss(outputs: Mapping[str, Array], batch: Mapping[str, Array], *, key_weight: float,
             gap_weight: float, emd_weight: float, size_power: float = 0.0,
             ) -> tuple[Array, dict[str, Array]]:
  """Mean over markdown cells of L1(key), CE(gap) and the expected misplacement; padding ignored.

  With `size_power` p > 0, a markdown cell of a notebook with n_code code cells
  weighs ((n_code + 1) / SIZE_UNIT)^p: the pooled Kendall tau counts a misplaced
  markdown cell once per code cell it jumps, so long notebooks weigh more (p = 1
  makes the expected-misplacement term count code cells, not fractions). A fixed
  unit, not a per-batch mean: batches are bucketed by length, so normalising per
  batch would cancel the weighting.
  """
  md = markdown_mask(batch)
  n_md = jnp.maximum(md.sum(), 1.0)
  w = md * ((batch["n_code"][:, None] + 1.0) / SIZE_UNIT) ** size_power if size_power else md
  l1 = jnp.abs(outputs["key"] - batch["target_key"])
  key_loss = (l1 * w).sum() / n_md
  logp = jax.nn.log_softmax(outputs["gap_logits"], -1)
  tgt = jnp.maximum(batch["target_gap"], 0)
  nll = -jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0]
  gap_nll = (nll * w).sum() / n_md
  gap_acc = ((outputs["gap_logits"].argmax(-1) == batch["target_gap"]) * md).sum() / n_md
  # Expected fraction of code cells on the wrong side of the markdown cell:
  # E_p |g - g*| / (n_code + 1), what the median decoding minimises.
  g = jnp.arange(logp.shape[-1])
  dist = jnp.abs(g[None, None, :] - tgt[..., None]) / (batch["n_code"][:, None, None] + 1.0)
  emd_loss = ((jnp.exp(logp) * dist).sum(-1) * w).sum() / n_md
  loss = key_weight * key_loss + gap_weight * gap_nll + emd_weight * emd_loss
  return loss, {"loss": loss, "key_l1": key_loss, "gap_nll": gap_nll, "gap_emd": emd_loss,
                "gap_acc": gap_acc, "n_markdown": md.sum()}


def gap_markdown_belief(outputs: Mapping[str, np.ndarray], row: int, n_code: int, n_md: int,
                        *, use_gaps: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
  """(gap probabilities [n_md, n_code + 1] or None, keys [n_md]) of one notebook's markdown
  cells (rows n_code..n_code+n_md), what `decode.keys_from_belief` decodes and
  `jaxrank.ensemble` averages: the softmax of "gap_logits" (or the given "gap_probs",
  renormalised); None without them, with `use_gaps` off or no markdown cells."""
  key = np.asarray(outputs["key"][row, n_code:n_code + n_md], np.float64)
  if not use_gaps or n_md == 0 or not ({"gap_logits", "gap_probs"} & set(outputs)):
    return None, key
  if "gap_logits" in outputs:
    logits = np.asarray(outputs["gap_logits"][row, n_code:n_code + n_md, : n_code + 1],
                        np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
  else:
    probs = np.asarray(outputs["gap_probs"][row, n_code:n_code + n_md, : n_code + 1], np.float64)
    probs /= np.maximum(probs.sum(-1, keepdims=True), 1e-12)
  return probs, key


def check_sampler_config(family: str, choices: Sequence[tuple[str, Any, Sequence[str]]],
                         sample_steps: int, num_samples: int) -> None:
  """Config checks of the two diffusion families: each (name, value, allowed) of `choices`
  has an allowed value, and there are at least one sampling step and one sample."""
  for name, value, allowed in choices:
    if value not in allowed:
      raise ValueError(f"{family} config: {name}={value!r}, expected one of {allowed}")
  if sample_steps < 1 or num_samples < 1:
    raise ValueError(f"{family} config: sample_steps={sample_steps} and "
                     f"num_samples={num_samples} must both be >= 1")
