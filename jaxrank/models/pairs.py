"""Pair features of (cell m, gap g) shared by the gap-softmax rankers.

Layout as in `jaxrank.data.batching`: code cells first, so code cell k is row k
and gap g (g = 0..n_code) lies between code rows g-1 and g. The features are
parameter-free functions of a cell-cell similarity matrix (TF-IDF, lexical or
encoder cosine): the "this markdown describes that code" evidence that carries
over to repositories never seen in training.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Gaps(NamedTuple):
  """The n_code + 1 gaps of each notebook, padded to C + 1 per row."""

  idx: Array  # [G] gap index g = 0..C
  valid: Array  # [B, G] g <= n_code
  is_end: Array  # [B, G] g == n_code (after the last code cell)
  centre: Array  # [B, G] (g + 0.5) / (n_code + 1), the gap's key


def gaps(n_code_B: Array, C: int) -> Gaps:
  g = jnp.arange(C + 1)
  return Gaps(g, g[None, :] <= n_code_B[:, None], g[None, :] == n_code_B[:, None],
              (g[None, :] + 0.5) / (n_code_B[:, None] + 1.0))


def prior_features(key_BxC: Array, centre_BxG: Array, n_code_B: Array) -> list[Array]:
  """[B, C, G] distances of each gap from a cell's pointwise key (a learned position
  prior; no gradient flows back into the key): signed, absolute, and in gaps
  (clipped at 8)."""
  rel = jax.lax.stop_gradient(key_BxC)[:, :, None] - centre_BxG[:, None, :]
  n1 = n_code_B[:, None, None] + 1.0
  return [rel, jnp.abs(rel), jnp.minimum(jnp.abs(rel) * n1, 8.0) / 8.0]


def gap_similarity_features(sim_BxCxC: Array, code_BxC: Array, n_code_B: Array) -> list[Array]:
  """[B, C, G] features of how similar cell m is to the code cells around gap g.

  Gap g lies between code rows g-1 and g. Per (m, g): the similarity to the
  code cell after and before the gap (0 past the ends), those two minus the
  best code cell's, their z-scores over the notebook's code cells, whether the
  next cell is the best one, its rank among the code cells (0 = best), and
  the similarity to the code cells one further out on each side.
  """
  B, C, _ = sim_BxCxC.shape
  grid = gaps(n_code_B, C)
  g_idx = grid.idx
  is_end, past = grid.is_end[:, None, :], ~grid.valid[:, None, :]
  code = code_BxC[:, None, :]
  n = jnp.maximum(code_BxC.sum(-1), 1)[:, None, None].astype(jnp.float32)
  sim = jnp.where(code, sim_BxCxC, 0.0)
  mean = sim.sum(-1, keepdims=True) / n
  std = jnp.sqrt(jnp.where(code, jnp.square(sim - mean), 0.0).sum(-1, keepdims=True) / n + 1e-4)
  best = jnp.where(code, sim_BxCxC, -2.0).max(-1, keepdims=True)
  zeros = jnp.zeros((B, C, 1), jnp.float32)
  nxt = jnp.where(is_end | past, 0.0, jnp.concatenate([sim, zeros], -1))
  prv = jnp.where(past | (g_idx == 0)[None, None, :], 0.0, jnp.concatenate([zeros, sim], -1))
  has_nxt = ~(is_end | past)
  has_prv = ~(past | (g_idx == 0)[None, None, :])
  z_nxt = jnp.where(has_nxt, (nxt - mean) / std, 0.0)
  z_prv = jnp.where(has_prv, (prv - mean) / std, 0.0)
  # One code cell further on each side: a markdown cell often introduces a
  # few code cells, and the best match need not be the first.
  nxt2 = jnp.concatenate([sim[:, :, 1:], zeros, zeros], -1)
  nxt2 = jnp.where(g_idx[None, None, :] + 1 < n_code_B[:, None, None], nxt2, 0.0)
  prv2 = jnp.concatenate([zeros, zeros, sim[:, :, :-1]], -1)
  prv2 = jnp.where((g_idx[None, None, :] >= 2) & ~past, prv2, 0.0)
  rank = jnp.argsort(jnp.argsort(-jnp.where(code, sim_BxCxC, -2.0), -1), -1).astype(jnp.float32)
  rank_nxt = jnp.concatenate([jnp.minimum(rank, 8.0) / 8.0, jnp.ones((B, C, 1))], -1)
  rank_nxt = jnp.where(has_nxt, rank_nxt, 1.0)
  return [nxt, prv, jnp.where(has_nxt, nxt - best, -1.0), jnp.where(has_prv, prv - best, -1.0),
          z_nxt, z_prv, jnp.maximum(z_nxt, z_prv), (rank_nxt == 0).astype(jnp.float32), rank_nxt,
          nxt2, prv2, jnp.maximum(nxt, nxt2) - best]


def best_gap_features(sim_BxCxC: Array, grid: Gaps, n_code_B: Array) -> list[Array]:
  """The BOW-MLP's five [B, C, G] similarity features (its README score depends on them):
  the similarity to the code cell after gap g and before it (0 past the ends), the
  next one's against the best gap's, whether it is the best, and its rank (0 = best)."""
  B, C, _ = sim_BxCxC.shape
  zeros = jnp.zeros((B, C, 1), jnp.float32)
  sim_next = jnp.where(grid.is_end[:, None, :], 0.0, jnp.concatenate([sim_BxCxC, zeros], -1))
  sim_prev = jnp.concatenate([zeros, sim_BxCxC], -1)
  sim_prev = jnp.where(grid.idx[None, None, :] > n_code_B[:, None, None], 0.0, sim_prev)
  # Relative evidence: this gap's similarity against the best gap of the
  # same markdown cell (the "most similar code cell" heuristic).
  best = jnp.max(jnp.where(grid.valid[:, None, :], sim_next, 0.0), -1, keepdims=True)
  is_best = ((sim_next >= best) & (best > 0)).astype(jnp.float32)
  # Rank of this gap's similarity among the markdown cell's gaps, in [0, 1].
  n1 = n_code_B[:, None, None] + 1.0
  masked = jnp.where(grid.valid[:, None, :], sim_next, -1.0)
  rank = jnp.argsort(jnp.argsort(-masked, axis=-1), axis=-1) / n1  # 0 = most similar
  return [sim_next, sim_prev, sim_next / (best + 1e-3), is_best, rank]


def _others_in_gaps(sim_BxCxC: Array, assign_BxCxG: Array, sharpness: float
                    ) -> tuple[Array, Array]:
  """Per (m, g), over the other cells j: sum of exp(sharpness (sim_mj - 1)) assign_jg (a
  soft maximum's mass) and sum of assign_jg (how many are in g); [B, C, G] each."""
  C = sim_BxCxC.shape[1]
  not_self = ~jnp.eye(C, dtype=bool)[None]
  e = jnp.where(not_self, jnp.exp(sharpness * (sim_BxCxC.astype(jnp.float32) - 1.0)), 0.0)
  total = jnp.einsum("bmj,bjg->bmg", e, assign_BxCxG)
  return total, assign_BxCxG.sum(1)[:, None, :] - assign_BxCxG


def _either_side(x_BxCxG: Array) -> tuple[Array, Array]:
  """x at gap g - 1 and at g + 1 (0 past the ends)."""
  zeros = jnp.zeros(x_BxCxG.shape[:2] + (1,), x_BxCxG.dtype)
  return (jnp.concatenate([zeros, x_BxCxG[:, :, :-1]], -1),
          jnp.concatenate([x_BxCxG[:, :, 1:], zeros], -1))


def estimate_features(sim_BxCxC: Array, probs_BxCxG: Array, has_BxC: Array,
                      sharpness: float = 10.0, floor: float = 1e-3) -> list[Array]:
  """[B, C, G] evidence from a previous estimate of every markdown cell's gap
  (gap diffusion's self-conditioning): per (m, g), m's own previous probability of
  g, as is and as a log (smoothed by `floor`, scaled to [0, 1]), a soft maximum of m's
  similarity to the other cells weighted by their probability of g (smoothed likewise:
  the logs of tiny probabilities would amplify rounding), the same for the gaps either
  side, the expected number of others in g (log), and whether m has an estimate; all 0
  where it has none."""
  has = has_BxC.astype(jnp.float32)[:, :, None]
  p = probs_BxCxG.astype(jnp.float32) * has  # cells without an estimate weigh nothing
  total, count = _others_in_gaps(sim_BxCxC, p, sharpness)
  scale = -math.log(floor)
  soft = jnp.log(total + floor) / scale + 1.0  # 0 (none) .. ~1 (a cell like m, surely there)
  prv, nxt = _either_side(soft)
  own_logp = jnp.log(p + floor) / scale + 1.0
  return [f * has for f in (own_logp, p, soft, prv, nxt, jnp.log1p(count) / 3.0)] + [
      jnp.broadcast_to(has, soft.shape)]


def placed_features(sim_BxCxC: Array, placed_gap_BxC: Array, placed_BxC: Array, grid: Gaps,
                    sharpness: float = 10.0) -> list[Array]:
  """[B, C, G] evidence from the markdown cells already placed (gap diffusion).

  Per (m, g): a soft maximum of m's similarity to the markdown cells placed in
  gap g (log-sum-exp at `sharpness`; 0 where g holds none), the same for the
  gaps either side, whether g holds any and how many (log), and g's soft
  maximum against m's best over the gaps. A markdown cell often explains the
  one before it (a heading, then its text), so a neighbour already placed is
  parameter-free evidence of where m goes, as a similar code cell is.
  """
  onehot = jax.nn.one_hot(jnp.where(placed_BxC, placed_gap_BxC, -1),
                          grid.valid.shape[1])  # [B, C, G]; -1 -> 0
  total, count = _others_in_gaps(sim_BxCxC, onehot, sharpness)  # count: the others in g
  has = count > 0
  soft = jnp.where(has, 1.0 + jnp.log(jnp.maximum(total, 1e-30)) / sharpness, 0.0)
  soft = jnp.maximum(soft, -1.0)
  prv, nxt = _either_side(soft)
  best = jnp.where(has, soft, -2.0).max(-1, keepdims=True)
  return [soft, prv, nxt, has.astype(jnp.float32),
          jnp.log1p(count) / 3.0,
          jnp.where(has, soft - best, -1.0)]
