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

from jaxrank.models import layers, pairs
from jaxrank.models.layers import BagEncoder, Mlp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BowMlpConfig:
  vocab_size: int = 30_001
  embed_dim: int = 128
  hidden_dim: int = 256
  num_layers: int = 2
  dropout: float = 0.1
  term_dropout: float = 0.0  # drop whole terms of a bag while training
  use_similarity: bool = True  # TF-IDF cosine of markdown vs the code cells around each gap
  use_bilinear: bool = False  # learned <query(markdown), key(gap)> term of the gap logits
  key_mlp: bool = False  # False: the key is linear in the TF-IDF terms (ridge-like) only
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


class BowMlpRanker(nn.Module):
  config: BowMlpConfig

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], deterministic: bool = True):
    cfg = self.config
    d = cfg.hidden_dim
    is_code, mask = batch["is_code"], batch["cell_mask"]
    n_code_B = batch["n_code"]
    feats = h_BxCxD = None
    if cfg.key_mlp or cfg.use_bilinear:  # the learned cell encoder feeds only these
      h_BxCxD = BagEncoder(cfg.vocab_size, cfg.embed_dim, d, cfg.num_layers, cfg.dropout,
                           cfg.term_dropout, cfg.dtype, name="cells")(
                               batch["ids"], batch["weights"], is_code, deterministic)
      feats = layers.with_context(h_BxCxD, is_code & mask, n_code_B)

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

    # Gap g sits between code cell g-1 and code cell g (rows g-1 and g). Pair
    # features of (markdown m, gap g), fed to a small MLP shared by all pairs:
    # distance from the pointwise prediction (the position prior; its shape is
    # learned, not fixed), and the TF-IDF similarity to the code cell after the
    # gap (row g) and before it (row g-1), zero at the notebook's ends.
    def similarity(grid):
      return pairs.best_gap_features(batch["sim"].astype(jnp.float32), grid, n_code_B)

    logits_BxCxG = layers.gap_head(self, key_BxC, feats, h_BxCxD, is_code & mask, n_code_B,
                                   similarity, cfg, deterministic)
    return {"key": key_BxC, "gap_logits": logits_BxCxG}


def build(config: BowMlpConfig) -> nn.Module:
  return BowMlpRanker(config)


def loss_fn(outputs: Mapping[str, Array], batch: Mapping[str, Array],
            config: BowMlpConfig) -> tuple[Array, dict[str, Array]]:
  """Mean over markdown cells of CE(gap), expected misplacement and L1(key)."""
  return layers.gap_loss(outputs, batch, key_weight=config.key_loss_weight,
                         gap_weight=config.gap_loss_weight, emd_weight=config.emd_loss_weight)


def markdown_belief(outputs: Mapping[str, np.ndarray], row: int, n_code: int, n_md: int,
                    config: BowMlpConfig) -> tuple[np.ndarray | None, np.ndarray]:
  """(gap probabilities or None when decoding pointwise, keys): what the trainer decodes
  (`jaxrank.decode.keys_from_belief`) and `jaxrank.ensemble` averages."""
  return layers.gap_markdown_belief(outputs, row, n_code, n_md,
                                    use_gaps=config.decode != "pointwise")
