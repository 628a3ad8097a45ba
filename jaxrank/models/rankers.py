"""Rankers on the Flax BERT/RoBERTa encoder (`jaxrank.models.roberta`): two families.

Both share the batch layout of `jaxrank.data.batching` (code cells first, so
code cell k is row k and gap g lies between rows g-1 and g), the decoding of
`jaxrank.decode` and the metrics; only the cell representations differ.

"roberta_cells" -- the cell-level notebook model (2nd place's shape):

  v_c      cell vector: a cached frozen-encoder vector (`features.kind="encoder"`,
           `batch["vec"]`), or the encoder run on the cell's tokens and
           mean-pooled, fine-tuned end to end (`features.kind="subword"`,
           `cell_input="tokens"`)
  h_c      = Transformer_over_cells(W v_c + type_c + is_code_c * pos(code_pos_c))
  key_m    = sigmoid(<w, LN(v_m)> + MLP([h_m, ctx, h_m * ctx]))        pointwise key
  logit_mg = MLP_pair(|key_m - centre_g|, ..., S(m, code g), S(m, code g-1), ...)
             [+ <q(h_m), k(h_{code g-1}, h_{code g})> / sqrt(D)   with use_bilinear]

  where S runs over the similarity matrices: the cosine of the frozen
  vectors and the per-notebook word TF-IDF cosine (`sim_lex`), each as raw
  values, against the notebook's best code cell, z-scores, ranks and one code
  cell further out (`jaxrank.models.pairs`). The pair MLP (a few thousand
  parameters) scores parameter-free evidence, so it carries over to
  repositories never seen in training; the learned heads that read cell
  *content* (bilinear term, a learned similarity map) memorised the training
  repositories and lost 0.02 tau on unseen ones, so they are off by default.

  Loss, heads' semantics and decoding (least expected misplaced pairs over the
  gap softmax) are the shared gap head's (`jaxrank.models.layers`), as the
  BOW-MLP's.

"roberta_pointwise" -- the public baseline: for every markdown cell one sequence
  `<s> markdown </s> code_1 code_2 ... code_S` (S code cells sampled evenly from
  the notebook, each its first `code_tokens` tokens; padding squeezed out so
  the sequence is contiguous), encoded, mean-pooled, regress the relative
  position with L1. Built from per-cell token ids (`features.kind="subword"`)
  inside the jitted model, so batching, sharding and resume are the trainer's.

A stored encoder is named by `encoder_name` -- MiniLM, an imported RoBERTa, or
our own MLM-pretrained one (`jaxrank.pretrain`). The trainer resolves the name
(nothing here reads files): its EncoderConfig arrives as `cfg.pretrained`, its
weights through the family hook `pretrained_params`. With no name the encoder
is built from the `enc_*` fields and trained from scratch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrank.models import layers, pairs, roberta
from jaxrank.models.layers import Mlp

Array = jax.Array

# Per-cell feature fields the cells ranker adds to its transformer input and key
# when the featurizer provides them: features.cell_shape, features.section_numbers.
FORM_FIELDS = ("shape", "section")
# Batch fields of the gap diffusion (jaxrank.models.gap_diffusion), absent otherwise:
# each cell's placed gap (-1: not placed; only markdown cells are ever placed) [B, C]
# and the share of each notebook's markdown cells still unplaced [B].
PLACED, MASK_RATIO = "placed_gap", "mask_ratio"
# Gap diffusion's self-conditioning (model.self_condition > 0): a previous estimate of
# every markdown cell's gap distribution [B, C, G]; rows of zeros = no estimate.
SELF_COND = "self_cond"


def self_cond_mask(batch: Mapping[str, Array]) -> Array:
  """[B, C] real markdown cells with a previous gap estimate."""
  return (batch[SELF_COND].sum(-1) > 0.5) & ~batch["is_code"] & batch["cell_mask"]


def placed_mask(batch: Mapping[str, Array]) -> Array:
  """[B, C] real markdown cells with a placed gap."""
  return (batch[PLACED] >= 0) & ~batch["is_code"] & batch["cell_mask"]


# ----------------------------------------------------------------------------------------
# Configs.
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EncoderFields:
  """Which encoder: a store name, or (no name) a fresh one of these sizes."""

  vocab_size: int = 0  # set by the trainer from the featurizer (tokenizer size / vector dim)
  encoder_name: str = ""  # store model name; "" = random init from enc_* below
  # The named model's EncoderConfig, resolved from the store by the trainer
  # (`jaxrank.train.family_from_config`), which also hands over its weights.
  pretrained: roberta.EncoderConfig | None = None
  enc_hidden: int = 64
  enc_layers: int = 2
  enc_heads: int = 4
  enc_max_len: int = 512
  pad_id: int = 1  # RoBERTa-style tokenizers of jaxrank.text.subword; BERT's is 0
  enc_dropout: float = 0.1
  dtype: Any = jnp.float32


@dataclasses.dataclass(frozen=True)
class CellsConfig(EncoderFields):
  cell_input: str = "vec"  # "vec": cached frozen vectors; "tokens": fine-tune the encoder
  hidden_dim: int = 256
  num_layers: int = 2  # transformer over cells
  num_heads: int = 4
  dropout: float = 0.1
  vec_dropout: float = 0.1  # dropout on the input cell vectors
  key_mlp: bool = True  # key = linear(v) [+ MLP(transformer state, code context)]
  use_bilinear: bool = False  # learned <query(h_m), key(gap)> term of the gap logits
  use_similarity: bool = True  # cosine pair features of the cell vectors
  use_lexical: bool = True  # also the per-notebook word TF-IDF cosine (batch["sim_lex"])
  pair_hidden: int = 32
  pair_layers: int = 2
  gap_loss_weight: float = 1.0
  key_loss_weight: float = 1.0
  emd_loss_weight: float = 1.0  # expected |gap - true gap| term of the BOW-MLP loss
  # Weight of a markdown cell ((n_code + 1) / 16)^p (layers.gap_loss): long notebooks
  # weigh more, as in the pooled Kendall tau.
  loss_size_power: float = 0.0
  decode: str = "gap"  # or "pointwise"
  # Decode-time price (in misplaced code cells) of each further markdown cell
  # sharing a gap: `decode.crowded_gaps`. 0 = independent medians.
  crowding: float = 2.0
  # Decode-time: markdown cells whose order the notebook's text says (numbered
  # sections, a table of contents: `jaxrank.text.sections.known_orders`) are
  # placed in that order (`decode.monotone_gaps`).
  section_order: bool = True


@dataclasses.dataclass(frozen=True)
class PointwiseConfig(EncoderFields):
  encoder_name: str = "minilm-l6"  # fine-tunes a stored encoder ("" = fresh from enc_*)
  md_tokens: int = 48  # markdown tokens (specials included)
  code_cells: int = 12  # S code cells sampled evenly
  code_tokens: int = 12  # tokens of each sampled code cell
  hidden_dim: int = 128
  dropout: float = 0.1
  decode: str = "pointwise"


# ----------------------------------------------------------------------------------------
# Encoder from the store or from the config.
# ----------------------------------------------------------------------------------------
def _dtype_name(dtype) -> str:
  return "bfloat16" if jnp.dtype(dtype) == jnp.bfloat16 else "float32"


def encoder_config(cfg: EncoderFields) -> roberta.EncoderConfig:
  if cfg.encoder_name:
    enc = cfg.pretrained
    if enc is None:
      raise ValueError(f"model.encoder_name={cfg.encoder_name!r}: the trainer resolves the named "
                       "encoder from the store (jaxrank.train.family_from_config)")
    if cfg.vocab_size and cfg.vocab_size > enc.vocab_size:
      raise ValueError(f"tokenizer has {cfg.vocab_size} tokens but encoder {cfg.encoder_name!r} "
                       f"has vocab_size {enc.vocab_size}; use the model's own tokenizer")
    return enc.replace(dtype=_dtype_name(cfg.dtype), hidden_dropout=cfg.enc_dropout,
                       attention_dropout=0.0)
  offset = cfg.pad_id + 1 if cfg.pad_id > 0 else 0
  return roberta.EncoderConfig(
      vocab_size=max(cfg.vocab_size, 8), hidden_size=cfg.enc_hidden, num_layers=cfg.enc_layers,
      num_heads=cfg.enc_heads, intermediate_size=4 * cfg.enc_hidden,
      max_position_embeddings=cfg.enc_max_len + offset, type_vocab_size=1, layer_norm_eps=1e-5,
      pad_token_id=cfg.pad_id, position_offset=offset, dtype=_dtype_name(cfg.dtype),
      hidden_dropout=cfg.enc_dropout, attention_dropout=0.0)


def pretrained_params(params: Mapping[str, Any], cfg: EncoderFields,
                      weights: Mapping[str, Any]) -> Mapping[str, Any]:
  """Family hook: puts the named encoder's `weights` (from the trainer) into a fresh tree."""
  if "encoder" not in params:
    return params
  got = jax.tree.map(lambda x: x.shape, weights)
  want = jax.tree.map(lambda x: x.shape, params["encoder"])
  if got != want:
    raise ValueError(f"stored encoder {cfg.encoder_name!r} does not fit the model's encoder tree")
  return {**params, "encoder": jax.tree.map(np.asarray, weights)}


def _encode_pool(enc_cfg, ids_NxL, pad_id, deterministic, name="encoder"):
  mask = ids_NxL != pad_id
  hidden = roberta.Encoder(enc_cfg, name=name)(ids_NxL, mask.astype(jnp.int32),
                                               deterministic=deterministic)
  return roberta.mean_pool(hidden, mask)


# ----------------------------------------------------------------------------------------
# Cell-level notebook model.
# ----------------------------------------------------------------------------------------
class CellsRanker(nn.Module):
  config: CellsConfig

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], deterministic: bool = True):
    cfg = self.config
    d = cfg.hidden_dim
    is_code, mask = batch["is_code"], batch["cell_mask"]
    if cfg.cell_input == "tokens":
      if "tokens" not in batch:
        raise ValueError("cell_input='tokens' needs features.kind='subword' (batch['tokens'])")
      tokens = batch["tokens"]
      B, C, T = tokens.shape
      enc = encoder_config(cfg)
      v_BxCxE = _encode_pool(enc, tokens.reshape(B * C, T), enc.pad_token_id,
                             deterministic).reshape(B, C, -1)
    else:
      if "vec" not in batch:
        raise ValueError("cell_input='vec' needs features.kind='encoder' (batch['vec'])")
      v_BxCxE = batch["vec"].astype(jnp.float32)
      B, C, _ = v_BxCxE.shape
    n_code_B = batch["n_code"]
    code_w = (is_code & mask).astype(jnp.float32)
    # The transformer over cells feeds only the learned heads (key MLP,
    # bilinear gap term); with both off the ranker is the BOW-MLP recipe on
    # encoder vectors.
    h_BxCxD = (CellsTransformer(cfg, name="cells")(v_BxCxE, batch, deterministic)
               if cfg.key_mlp or cfg.use_bilinear else None)

    # Pointwise key of each (markdown) cell: linear in its own frozen vector
    # (what ridge on the text learns), plus with key_mlp an MLP of its
    # transformer state and the notebook's code context.
    key_logit = nn.Dense(1, name="key_linear")(
        nn.LayerNorm(name="key_norm")(v_BxCxE))[..., 0].astype(jnp.float32)
    for name in FORM_FIELDS:  # the cell's form, its section number: straight into the key
      if name in batch:
        key_logit += nn.Dense(1, name=f"{name}_key")(batch[name].astype(jnp.float32))[..., 0]
    if cfg.key_mlp:
      feats = layers.with_context(h_BxCxD, code_w, n_code_B)
      key_logit += Mlp(d, 1, 2, cfg.dropout, cfg.dtype, name="key_head")(
          feats, deterministic)[..., 0].astype(jnp.float32)
    else:
      feats = h_BxCxD
    key_BxC = nn.sigmoid(key_logit)

    # Gap g sits between code cell g-1 and code cell g (rows g-1 and g). Pair
    # features of (markdown m, gap g), scored by a small MLP shared by all
    # pairs: the distance of g from the pointwise key (a learned position
    # prior), and how similar m is to the code cells around g -- raw, against
    # the best code cell of the notebook, as a z-score and as a rank. These are
    # parameter-free "this markdown describes that code" evidence that carries
    # over to unseen repositories (see the BOW-MLP note).
    def similarity(grid):
      sims, out = [], []
      if "sim" in batch:
        sims.append(batch["sim"].astype(jnp.float32))
      else:  # fine-tuned vectors: cosine of the current ones
        # sqrt(x + eps), not norm(): padding cells have v = 0, where norm's gradient is NaN.
        u = v_BxCxE * jax.lax.rsqrt(jnp.sum(jnp.square(v_BxCxE), -1, keepdims=True) + 1e-12)
        sims.append(jnp.einsum("bce,bke->bck", u, u).astype(jnp.float32))
      if cfg.use_lexical and "sim_lex" in batch:
        sims.append(batch["sim_lex"].astype(jnp.float32))
      for sim in sims:
        out += pairs.gap_similarity_features(sim, is_code & mask, n_code_B)
      if PLACED in batch:  # gap diffusion: the markdown cells already placed, per gap
        for sim in sims:
          out += pairs.placed_features(sim, batch[PLACED], placed_mask(batch), grid)
      if SELF_COND in batch:  # gap diffusion: the previous estimate of every markdown cell
        out += pairs.estimate_features(sims[0], batch[SELF_COND], self_cond_mask(batch))
      return out

    def placed_states(grid):
      # Gap diffusion: the mean transformer state of the markdown cells placed in each
      # gap (0 where none), so the learned term can match m against them.
      onehot = jax.nn.one_hot(jnp.where(placed_mask(batch), batch[PLACED], -1),
                              grid.valid.shape[1], dtype=h_BxCxD.dtype)  # [B, C, G]
      total = jnp.einsum("bcg,bcd->bgd", onehot, h_BxCxD)
      count = onehot.sum(1)[..., None]
      return jnp.concatenate([total / jnp.maximum(count, 1), jnp.log1p(count)], -1)

    # (placed_in_gap_keys is a field of gap_diffusion.GapDiffusionConfig, a CellsConfig.)
    with_placed = PLACED in batch and getattr(cfg, "placed_in_gap_keys", False)
    logits_BxCxG = layers.gap_head(self, key_BxC, feats, h_BxCxD, is_code & mask, n_code_B,
                                   similarity, cfg, deterministic,
                                   gap_extra=placed_states if with_placed else None)
    return {"key": key_BxC, "gap_logits": logits_BxCxG}


class CellsTransformer(nn.Module):
  """h_c = Transformer_over_cells(W v_c + type_c + is_code_c * pos(code_pos_c))."""

  config: CellsConfig

  @nn.compact
  def __call__(self, v_BxCxE, batch, deterministic=True):
    cfg = self.config
    d = cfg.hidden_dim
    is_code, mask = batch["is_code"], batch["cell_mask"]
    x = nn.LayerNorm(dtype=cfg.dtype, name="in_norm")(v_BxCxE)
    x = nn.Dropout(cfg.vec_dropout)(x, deterministic=deterministic)
    x = nn.Dense(d, dtype=cfg.dtype, name="in_proj")(x)
    x += nn.Embed(2, d, dtype=cfg.dtype, name="type")(is_code.astype(jnp.int32))
    for name in FORM_FIELDS:  # features.cell_shape (heading level, list, plot...), section_numbers
      if name in batch:
        x += nn.Dense(d, dtype=cfg.dtype, name=name)(batch[name].astype(jnp.float32))
    pos_proj = nn.Dense(d, dtype=cfg.dtype, name="pos")
    x += jnp.where(is_code[..., None], pos_proj(layers.fourier(batch["code_pos"], 16)), 0)
    if PLACED in batch:
      # Gap diffusion (jaxrank.models.gap_diffusion): markdown cells already
      # placed sit at their gap's centre, embedded as code positions are, plus
      # a learned "placed" vector; every cell sees how much is still masked.
      placed = placed_mask(batch)
      centre = ((jnp.maximum(batch[PLACED], 0).astype(jnp.float32) + 0.5)
                / (batch["n_code"][:, None].astype(jnp.float32) + 1.0))
      placed_vec = self.param("placed", nn.initializers.normal(0.02), (d,)).astype(cfg.dtype)
      x += jnp.where(placed[..., None], pos_proj(layers.fourier(centre, 16)) + placed_vec, 0)
      x += nn.Dense(d, dtype=cfg.dtype, name="mask_ratio")(
          layers.fourier(batch[MASK_RATIO].astype(jnp.float32), 4, raw=True))[:, None, :]
    if SELF_COND in batch:
      # Self-conditioning: each markdown cell's previous estimate, as its expected
      # gap centre (embedded as positions are), its confidence, and a learned vector.
      has = self_cond_mask(batch)
      p = batch[SELF_COND].astype(jnp.float32)
      centres = pairs.gaps(batch["n_code"], p.shape[1]).centre  # [B, G]
      expected = jnp.einsum("bcg,bg->bc", p, centres)
      conf = jnp.stack([p.max(-1), (p * jnp.log(jnp.maximum(p, 1e-30))).sum(-1) / 4.0], -1)
      sc_vec = self.param("self_cond", nn.initializers.normal(0.02), (d,)).astype(cfg.dtype)
      # An expectation is soft: the top octaves of its Fourier code (up to 2^15 pi) would
      # amplify rounding, so it is embedded blurred, octaves 8 and up zeroed.
      blur = jnp.tile(jnp.arange(16) < 8, 2)
      x += jnp.where(has[..., None], pos_proj(layers.fourier(expected, 16) * blur) + sc_vec
                     + nn.Dense(d, dtype=cfg.dtype, name="self_cond_conf")(conf), 0)
    cell_cfg = roberta.EncoderConfig(
        vocab_size=1, hidden_size=d, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        intermediate_size=2 * d, layer_norm_eps=1e-5, hidden_act="gelu_new",
        dtype=_dtype_name(cfg.dtype), hidden_dropout=cfg.dropout, attention_dropout=0.0)
    x = nn.LayerNorm(dtype=cfg.dtype, name="cells_norm")(x)
    for i in range(cfg.num_layers):
      x = roberta.Layer(cell_cfg, name=f"cells_{i}")(x, mask, deterministic)
    return x


# ----------------------------------------------------------------------------------------
# Pointwise model.
# ----------------------------------------------------------------------------------------
def sampled_code_rows(n_code_B: Array, n_samples: int) -> tuple[Array, Array]:
  """Rows of S code cells spread evenly over each notebook ([B, S]) and their validity."""
  s = jnp.arange(n_samples)
  n = n_code_B[:, None]
  spread = jnp.round(s[None, :] * jnp.maximum(n - 1, 0) / max(n_samples - 1, 1)).astype(jnp.int32)
  rows = jnp.where(n >= n_samples, spread, s[None, :])
  return jnp.minimum(rows, jnp.maximum(n - 1, 0)), s[None, :] < n


def pointwise_sequences(tokens_BxCxT: Array, n_code_B: Array, cfg: PointwiseConfig,
                        pad_id: int) -> Array:
  """Per cell: its first md_tokens tokens, then S sampled code cells' tokens, squeezed.

  Returns ids [B, C, md_tokens + S * code_tokens] with all pad tokens at the end
  (a stable sort on "is pad"), so positions count real tokens only.
  """
  B, C, T = tokens_BxCxT.shape
  md = tokens_BxCxT[:, :, :cfg.md_tokens]
  md = jnp.pad(md, ((0, 0), (0, 0), (0, max(0, cfg.md_tokens - T))), constant_values=pad_id)
  rows_BxS, valid_BxS = sampled_code_rows(n_code_B, cfg.code_cells)
  code = jnp.take_along_axis(tokens_BxCxT, rows_BxS[:, :, None], axis=1)  # [B, S, T]
  code = code[:, :, 1:1 + cfg.code_tokens]  # drop the leading <s>/[CLS]
  code = jnp.pad(code, ((0, 0), (0, 0), (0, max(0, cfg.code_tokens - code.shape[-1]))),
                 constant_values=pad_id)
  code = jnp.where(valid_BxS[:, :, None], code, pad_id).reshape(B, 1, -1)
  seq = jnp.concatenate([md, jnp.broadcast_to(code, (B, C, code.shape[-1]))], -1)
  order = jnp.argsort(seq == pad_id, axis=-1, stable=True)
  return jnp.take_along_axis(seq, order, -1)


class PointwiseRanker(nn.Module):
  config: PointwiseConfig

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], deterministic: bool = True):
    cfg = self.config
    enc = encoder_config(cfg)
    tokens = batch["tokens"]
    B, C, _ = tokens.shape
    seq = pointwise_sequences(tokens, batch["n_code"], cfg, enc.pad_token_id)
    v = _encode_pool(enc, seq.reshape(B * C, -1), enc.pad_token_id, deterministic)
    v = v.reshape(B, C, -1).astype(cfg.dtype)
    n_cells = batch["cell_mask"].sum(-1, keepdims=True).astype(jnp.float32)
    frac = (batch["n_code"][:, None].astype(jnp.float32) / jnp.maximum(n_cells, 1.0))
    extra = jnp.broadcast_to(jnp.concatenate([frac, jnp.log1p(n_cells) / 8.0], -1)[:, None],
                             (B, C, 2)).astype(cfg.dtype)
    x = jnp.concatenate([v, extra], -1)
    key = Mlp(cfg.hidden_dim, 1, 2, cfg.dropout, cfg.dtype, name="key_head")(
        x, deterministic)[..., 0]
    return {"key": nn.sigmoid(key.astype(jnp.float32))}


# ----------------------------------------------------------------------------------------
# Family interface (jaxrank.train).
# ----------------------------------------------------------------------------------------
def build(config) -> nn.Module:
  if isinstance(config, CellsConfig):
    return CellsRanker(config)
  if isinstance(config, PointwiseConfig):
    return PointwiseRanker(config)
  raise TypeError(f"no ranker for config type {type(config).__name__}")


def loss_fn(outputs: Mapping[str, Array], batch: Mapping[str, Array], config
            ) -> tuple[Array, dict[str, Array]]:
  if isinstance(config, CellsConfig):
    return layers.gap_loss(outputs, batch, key_weight=config.key_loss_weight,
                           gap_weight=config.gap_loss_weight, emd_weight=config.emd_loss_weight,
                           size_power=config.loss_size_power)
  key_loss = layers.key_l1(outputs["key"], batch)
  return key_loss, {"loss": key_loss, "key_l1": key_loss,
                    "n_markdown": layers.markdown_mask(batch).sum()}


def markdown_belief(outputs: Mapping[str, np.ndarray], row: int, n_code: int, n_md: int,
                    config) -> tuple[np.ndarray | None, np.ndarray]:
  return layers.gap_markdown_belief(outputs, row, n_code, n_md,
                                    use_gaps=config.decode != "pointwise")
