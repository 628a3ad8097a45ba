"""Diffusion ranker: markdown positions denoised by a transformer over all cells.

The whole notebook is one sample. Every cell is a vector (`cell_vec` [B, C, F]
when the featurizer provides one, e.g. cached encoder vectors; otherwise the
BOW `BagEncoder` of `jaxrank.models.layers` over the TF-IDF bags). Each cell
also carries a scalar *position* in centred units x = 2 * key - 1 (keys as in
`jaxrank.decode`):

  code cells      x = 2 * code_pos - 1, known and clean at every step;
  markdown cells  x_t, continuous, pure noise at t = 0 and the truth at t = 1.

Objective: flow matching on the straight (rectified-flow) path of Lipman et
al. 2022 / Liu et al. 2022,

  x0 ~ N(0, noise_std^2),  x1 = 2 * target_key - 1,
  x_t = (1 - t) * x0 + t * x1,          velocity  v = dx_t/dt = x1 - x0,

with t drawn per notebook from the configured time distribution ("uniform"
or "logit_normal" as in Esser et al. 2024, SD3). The *noise schedule* is this
path plus `noise_std` and the time distribution (all in the config). The
network is either parameterised to predict the clean position x1
("x1": loss |x1_hat - x1|^2, which is the velocity loss weighted by (1 - t)^2,
since v_hat = (x1_hat - x_t) / (1 - t)) or the velocity itself ("velocity":
the plain flow-matching loss |v_hat - (x1 - x0)|^2). Loss over markdown cells
only; code positions are conditions.

Sampling (`predict`): S independent noise draws per notebook, K Euler steps of
dt = 1/K from t = 0 to 1 (`euler_sample`), then the S final positions are
combined per cell ("mean" or "median") into keys (and, for the gap head, the
last step's gap probabilities are averaged) that `markdown_belief` hands to
the decoder (`jaxrank.decode`) (code order is always kept). The noise comes from the
key the Predictor passes (fixed per run seed), so predictions are deterministic.
With K = 1 the sampler returns the network's clean-position estimate at pure
noise, i.e. a pointwise regressor of E[x1 | notebook].

SDEdit-style start (`sample_t_start` > 0; Meng et al. 2022): the network is
first evaluated once at t = 0 (that clean estimate is the K = 1 answer), the
estimate is re-noised to t_start with the run's own noise,
x_{t_start} = (1 - t_start) x0 + t_start x1_hat, and the K Euler steps cover
[t_start, 1] only, each seeing the other markdown cells' current placements
and self-conditioned on the previous estimate (the first on the t = 0 one).
So the sampler corrects a one-shot answer instead of inventing one from pure
noise; t_start -> 1 returns the start estimate, t_start = 0 is the sampler
above, number for number (tested with oracle denoisers). `t0_prob` trains a
share of notebooks at t = 0 exactly, the task that start estimate solves, and
`prob_avg_steps` averages the gap probabilities of the last steps.

Denoiser: cell vector + embedding of the cell's position (raw value and Fourier
features) + embedding of t, then pre-LN transformer blocks over the cells.
Attention is masked to real cells and biased per head by pair features
(the cosine `sim` and, when present, the lexical `sim_lex`, |x_i - x_j|,
t * |x_i - x_j|). No embedding of the row index: markdown rows are shuffled,
and the model is equivariant to permutations of them (tested). Code rows get
only their known position.

Output head (`head`):
  "gap"     (default) x1-prediction through a softmax over the n_code + 1 gaps
            between code cells: logit[m, g] = MLP(pair features of (m, g)),
            the features being |x_t,m - centre_g| with t, the distance of a
            content-only prior key from centre_g, and the similarity of m to
            the code cells around g (`jaxrank.models.pairs`); x1_hat is the
            softmax's mean gap centre, so the sampler is unchanged. Trained
            with the BOW-MLP's gap losses (CE of the true gap + expected
            misplacement) + |x1_hat - x1|. The gap probabilities of the last
            Euler step, averaged over the S samples, are decoded by least
            expected misplaced pairs, like the other rankers.
  "scalar"  x1_hat (or the velocity) regressed directly, loss as above.

`objective="pointwise"` trains the *same* network (same cell vectors, same
transformer, same head) as a plain one-shot predictor: markdown positions are
given as 0 at t = 0, and the targets are the same (the gap losses for the gap
head; L1 of the key for the scalar head). It is the matched pointwise peer in
`benchmarks/bench_diffusion.py`.

How many steps and samples pay off, and how it compares with the one-shot
network, is measured in `benchmarks/bench_diffusion.py` (its docstring has the
table): samples matter more than steps, and the one-shot network stays ahead.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrank.models import layers, pairs
from jaxrank.models.layers import BagEncoder, Mlp

Array = jax.Array

OBJECTIVES = ("flow", "pointwise")
PARAMETERIZATIONS = ("x1", "velocity")
TIME_SAMPLING = ("uniform", "logit_normal")
COMBINE = ("mean", "median")
HEADS = ("gap", "scalar")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  vocab_size: int = 30_001
  # Cell vectors (BagEncoder when the batch has no `cell_vec`).
  embed_dim: int = 64
  hidden_dim: int = 128  # transformer width
  num_layers: int = 2  # BagEncoder MLP layers
  term_dropout: float = 0.1
  # Transformer over cells.
  tf_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.1
  use_similarity: bool = True  # attention bias (and gap-head pair features) from `sim`
  use_lexical: bool = True  # also `sim_lex` (per-notebook word TF-IDF cosine) when present
  # Output head: "gap" -- a softmax over the n_code + 1 gaps between code cells,
  # whose mean position is the clean-position estimate x1_hat (and whose
  # probabilities are decoded by least expected misplaced pairs at the end);
  # "scalar" -- x1_hat (or the velocity) regressed directly.
  head: str = "gap"
  pair_hidden: int = 32
  use_bilinear: bool = False  # gap head: learned <q(h_m), k(code h around g)> term
  gap_loss_weight: float = 1.0  # gap head: CE of the true gap
  emd_loss_weight: float = 1.0  # gap head: expected |gap - true gap| / (n_code + 1)
  x1_loss_weight: float = 1.0  # gap head: |x1_hat - x1| / 2 (key units)
  prior_loss_weight: float = 1.0  # gap head: L1 of the content-only position prior
  # Self-conditioning: the denoiser also sees its previous clean-position
  # estimate; in training, with probability self_cond_prob, a first
  # (gradient-free) pass provides it, so the model learns how far to trust
  # its own estimates -- what it meets at sampling time.
  self_condition: bool = True
  self_cond_prob: float = 0.5
  # Objective and noise schedule.
  objective: str = "flow"  # "flow" (diffusion) or "pointwise" (same net, plain regression)
  parameterization: str = "x1"  # network predicts "x1" (clean position) or "velocity"
  noise_std: float = 1.0  # x0 ~ N(0, noise_std^2) in centred units (keys span [-1, 1])
  time_sampling: str = "logit_normal"  # t ~ "uniform"(0,1) or sigmoid(N(logit_mean, logit_std))
  logit_mean: float = 0.0
  logit_std: float = 1.0
  # Probability of training a notebook at t = 0 exactly (pure noise: the
  # one-shot task), so that the first estimate the SDEdit-style sampler
  # refines is as good as the pointwise twin's; 0 = the time distribution only.
  t0_prob: float = 0.0
  # Sampling.
  sample_steps: int = 16  # K Euler steps
  num_samples: int = 4  # S noise draws per notebook, combined per cell
  combine: str = "mean"  # "mean" or "median" of the S final positions
  # SDEdit-style start: 0 = integrate from pure noise (K Euler steps over
  # [0, 1]); t_start in (0, 1) = one network evaluation at t = 0 (the one-shot
  # clean estimate), re-noised to t_start, then K Euler steps over [t_start, 1]
  # that refine it.
  sample_t_start: float = 0.0
  # Gap head: the decoded gap probabilities are the average of the last
  # `prob_avg_steps` Euler steps' (1 = the last step only).
  prob_avg_steps: int = 1
  # Gap head: price of each further markdown cell sharing a gap (decode.crowded_gaps).
  crowding: float = 2.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    layers.check_sampler_config(
        "diffusion", [("objective", self.objective, OBJECTIVES),
                      ("parameterization", self.parameterization, PARAMETERIZATIONS),
                      ("time_sampling", self.time_sampling, TIME_SAMPLING),
                      ("combine", self.combine, COMBINE),
                      ("head", self.head, HEADS)], self.sample_steps, self.num_samples)
    if not 0.0 <= self.sample_t_start < 1.0:
      raise ValueError(f"diffusion config: sample_t_start={self.sample_t_start} must be in [0, 1)")
    if not 0.0 <= self.t0_prob <= 1.0:
      raise ValueError(f"diffusion config: t0_prob={self.t0_prob} must be in [0, 1]")
    if self.prob_avg_steps < 1:
      raise ValueError(f"diffusion config: prob_avg_steps={self.prob_avg_steps} must be >= 1")
    if self.head == "gap" and self.parameterization != "x1":
      raise ValueError("diffusion config: head='gap' predicts the clean position; it needs "
                       "parameterization='x1'")
    if self.hidden_dim % self.num_heads:
      raise ValueError(f"diffusion config: hidden_dim={self.hidden_dim} is not a multiple of "
                       f"num_heads={self.num_heads}")


# --- the maths of the path (pure functions, tested with oracle denoisers) --------
def key_to_x(key):
  """Key in (0, 1) -> centred position in (-1, 1)."""
  return 2.0 * key - 1.0


def x_to_key(x):
  return 0.5 * (x + 1.0)


def interpolate(x0, x1, t):
  """x_t on the straight path; `t` broadcasts against x (e.g. [B, 1] for [B, C])."""
  return (1.0 - t) * x0 + t * x1


def velocity_target(x0, x1):
  return x1 - x0


def to_velocity(out, x_t, t, parameterization: str):
  """The network output as a velocity (for the Euler step)."""
  if parameterization == "velocity":
    return out
  # x1-prediction: v = (x1_hat - x_t) / (1 - t). The sampler never evaluates
  # t = 1 (its last step starts at 1 - 1/K); the floor only guards other callers.
  return (out - x_t) / jnp.maximum(1.0 - t, 1e-4)


def to_x1(out, x_t, t, parameterization: str):
  """The network output as a clean-position estimate."""
  if parameterization == "x1":
    return out
  return x_t + (1.0 - t) * out


def sample_times(rng, shape, cfg: DiffusionConfig):
  """Training times t in (0, 1) from the configured distribution."""
  if cfg.time_sampling == "uniform":
    return jax.random.uniform(rng, shape)
  return jax.nn.sigmoid(cfg.logit_mean + cfg.logit_std * jax.random.normal(rng, shape))


def euler_sample(denoise_fn: Callable[[Array, Array], Array], x0, steps: int,
                 parameterization: str, t_start: float = 0.0):
  """Integrates dx/dt = v(x, t) from t = t_start (x0 = x_{t_start}) to t = 1
  with `steps` Euler steps of (1 - t_start) / steps.

  `denoise_fn(x_t, t)` (t a scalar) returns the network output in the given
  parameterisation. With the true velocity of a point mass, (x1 - x_t)/(1 - t),
  every step lands on the straight line to x1, so any K recovers x1 exactly.
  """
  dt = (1.0 - t_start) / steps

  def body(k, x):
    t = t_start + k * dt
    v = to_velocity(denoise_fn(x, t), x, t, parameterization)
    return x + dt * v

  return jax.lax.fori_loop(0, steps, body, x0)


def euler_sample_aux(denoise_fn: Callable[[Array, Array, Any, Array], tuple[Array, Any]], x0,
                     aux0, steps: int, parameterization: str, t_start: float = 0.0):
  """`euler_sample` for a denoiser with state: `denoise_fn(x_t, t, aux, k)`
  (k the step index) returns (output, new aux), e.g. gap probabilities and the
  estimate the next step is self-conditioned on; returns (final x, the aux of
  the last evaluation)."""
  dt = (1.0 - t_start) / steps

  def body(k, carry):
    x, aux = carry
    t = t_start + k * dt
    out, aux = denoise_fn(x, t, aux, k)
    return x + dt * to_velocity(out, x, t, parameterization), aux

  return jax.lax.fori_loop(0, steps, body, (x0, aux0))


# --- the network --------------------------------------------------------------------
def _features(x, n: int = 6):
  """Raw value plus fixed Fourier features of a position or time: [..., 2n + 1]."""
  return layers.fourier(x, n, scale=jnp.pi / 2, raw=True)


class Block(nn.Module):
  """Pre-LN transformer block with an additive attention bias [B, H, C, C]."""

  dim: int
  heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h_BxCxD, bias_BxHxCxC, deterministic: bool = True):
    dh = self.dim // self.heads
    x = nn.LayerNorm(dtype=self.dtype)(h_BxCxD)
    qkv = nn.DenseGeneral((3, self.heads, dh), dtype=self.dtype, name="qkv")(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, C, H, dh]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / np.sqrt(dh)
    w = jax.nn.softmax(logits + bias_BxHxCxC, -1)
    w = nn.Dropout(self.dropout)(w, deterministic=deterministic)
    o = jnp.einsum("bhqk,bkhd->bqhd", w.astype(self.dtype), v)
    o = nn.DenseGeneral(self.dim, axis=(-2, -1), dtype=self.dtype, name="out")(o)
    h_BxCxD = h_BxCxD + nn.Dropout(self.dropout)(o, deterministic=deterministic)
    x = nn.LayerNorm(dtype=self.dtype)(h_BxCxD)
    x = Mlp(self.mlp_dim, self.dim, 2, self.dropout, self.dtype, name="mlp")(x, deterministic)
    return h_BxCxD + nn.Dropout(self.dropout)(x, deterministic=deterministic)


class Denoiser(nn.Module):
  """(batch, markdown positions x_t [B, C], time t [B]) -> output per cell [B, C]."""

  config: DiffusionConfig

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], x_BxC, t_B, deterministic: bool = True,
               sc_BxC=None, sc_on_B=None):
    cfg = self.config
    d = cfg.hidden_dim
    is_code, mask = batch["is_code"], batch["cell_mask"]
    B, C = is_code.shape
    vec = batch.get("vec", batch.get("cell_vec"))
    if vec is not None:  # precomputed vectors (e.g. a frozen encoder's, cached)
      cell = nn.Dense(d, dtype=cfg.dtype, name="cell_proj")(vec.astype(cfg.dtype))
      cell = cell + nn.Embed(2, d, dtype=cfg.dtype, name="type")(is_code.astype(jnp.int32))
      cell = nn.LayerNorm(dtype=cfg.dtype, name="cell_norm")(cell)
    else:
      cell = BagEncoder(cfg.vocab_size, cfg.embed_dim, d, cfg.num_layers, cfg.dropout,
                        cfg.term_dropout, cfg.dtype, name="cells")(
                            batch["ids"], batch["weights"], is_code, deterministic)

    # Positions: code cells at their known place, markdown at x_t; padding at 0.
    pos_BxC = jnp.where(is_code, key_to_x(batch["code_pos"]), x_BxC.astype(jnp.float32))
    pos_BxC = jnp.where(mask, pos_BxC, 0.0)
    t_B = t_B.astype(jnp.float32)
    pos_emb = Mlp(d, d, 2, 0.0, cfg.dtype, name="pos_emb")(_features(pos_BxC).astype(cfg.dtype))
    t_emb = Mlp(d, d, 2, 0.0, cfg.dtype, name="time_emb")(_features(t_B).astype(cfg.dtype))
    h = cell + pos_emb + t_emb[:, None, :]
    if cfg.self_condition:
      # Self-conditioning (Chen et al. 2022): the model's own clean-position
      # estimate from the previous step, for the markdown cells, with a flag
      # saying whether there is one.
      sc_BxC = jnp.zeros((B, C), jnp.float32) if sc_BxC is None else sc_BxC.astype(jnp.float32)
      sc_on_B = jnp.zeros((B,), jnp.float32) if sc_on_B is None else sc_on_B.astype(jnp.float32)
      sc_BxC = jnp.where(is_code | ~mask, 0.0, sc_BxC * sc_on_B[:, None])
      sc_in = jnp.concatenate([_features(sc_BxC), jnp.broadcast_to(sc_on_B[:, None, None],
                                                                   (B, C, 1))], -1)
      h = h + Mlp(d, d, 2, 0.0, cfg.dtype, name="sc_emb")(sc_in.astype(cfg.dtype))

    # Attention bias from pair features; padding keys masked out.
    dist = jnp.abs(pos_BxC[:, :, None] - pos_BxC[:, None, :])
    pair = [dist, t_B[:, None, None] * dist]
    sims = []
    if cfg.use_similarity and "sim" in batch:
      sims.append(batch["sim"].astype(jnp.float32))
    if cfg.use_similarity and cfg.use_lexical and "sim_lex" in batch:
      sims.append(batch["sim_lex"].astype(jnp.float32))
    pair += sims
    bias = nn.Dense(cfg.num_heads, name="pair_bias")(jnp.stack(pair, -1))  # [B, C, C, H]
    bias = jnp.where(mask[:, None, :, None], bias, -1e9).transpose(0, 3, 1, 2)
    for i in range(cfg.tf_layers):
      h = Block(d, cfg.num_heads, cfg.mlp_dim, cfg.dropout, cfg.dtype, name=f"block{i}")(
          h, bias, deterministic)
    h = nn.LayerNorm(dtype=cfg.dtype, name="final_norm")(h)
    if cfg.head == "scalar":
      return nn.Dense(1, dtype=cfg.dtype, name="head")(h)[..., 0].astype(jnp.float32)
    return self._gap_head(h, batch, vec, pos_BxC, t_B, sims, deterministic, sc_BxC, sc_on_B)

  def _gap_head(self, h_BxCxD, batch, vec, pos_BxC, t_B, sims, deterministic, sc_BxC, sc_on_B):
    """(x1_hat [B, C], gap logits [B, C, C + 1]): the clean position as a gap softmax.

    logit[m, g] = MLP(pair features) [+ <q(h_m), k(h_code g-1, h_code g)> / sqrt(D)],
    the pair features being the distance of the cell's current position x_t
    from gap g's centre (with t: how much to trust it), the distance of a
    content-only prior key from it (linear in the cell vector + MLP of h_m;
    what the cell ranker uses), and the similarity of m to the code cells
    around g (`pairs.gap_similarity_features`). The transformer state h
    carries the other cells' current positions into the prior.
    x1_hat is the mean gap centre under the softmax, so the x1-prediction
    flow-matching sampler runs unchanged on it.
    """
    cfg = self.config
    d = cfg.hidden_dim
    is_code, mask, n_code_B = batch["is_code"], batch["cell_mask"], batch["n_code"]
    B, C = is_code.shape
    grid = pairs.gaps(n_code_B, C)
    is_end_BxG, centre_BxG = grid.is_end, grid.centre
    xc_BxG = key_to_x(centre_BxG)
    n1 = (n_code_B[:, None, None] + 1.0)
    # A content-only position prior (as the cell ranker's key): linear in the
    # cell vector plus an MLP of its transformer state at this step.
    prior = Mlp(d, 1, 2, cfg.dropout, cfg.dtype, name="prior_head")(h_BxCxD, deterministic)
    prior = prior[..., 0].astype(jnp.float32)
    if vec is not None:
      prior += nn.Dense(1, name="prior_linear")(
          nn.LayerNorm(name="prior_norm")(vec.astype(jnp.float32)))[..., 0]
    prior_key = nn.sigmoid(prior)
    dx = pos_BxC[:, :, None] - xc_BxG[:, None, :]
    t = jnp.broadcast_to(t_B[:, None, None], dx.shape)
    feats = [dx, jnp.abs(dx), jnp.minimum(jnp.abs(dx) * n1 / 2, 8.0) / 8.0, t, t * jnp.abs(dx),
             jnp.broadcast_to(centre_BxG[:, None, :], dx.shape),
             *pairs.prior_features(prior_key, centre_BxG, n_code_B)]
    if cfg.self_condition:
      on = jnp.broadcast_to(sc_on_B[:, None, None], dx.shape)
      dsc = (sc_BxC[:, :, None] - xc_BxG[:, None, :]) * on
      feats += [dsc, jnp.abs(dsc), jnp.minimum(jnp.abs(dsc) * n1 / 2, 8.0) / 8.0, on]
    for sim in sims:
      feats += pairs.gap_similarity_features(sim, is_code & mask, n_code_B)
    bilinear = None
    if cfg.use_bilinear:
      code_h = jnp.where((is_code & mask)[..., None], h_BxCxD, 0)
      prev, nxt = layers.gap_neighbours(self, code_h, is_end_BxG)
      k = nn.Dense(d, dtype=cfg.dtype, name="gap_key")(jnp.concatenate([prev, nxt], -1))
      q = nn.Dense(d, dtype=cfg.dtype, name="gap_query")(h_BxCxD)
      bilinear = jnp.einsum("bcd,bgd->bcg", q, k).astype(jnp.float32) / np.sqrt(d)
    logits = layers.pair_logits(feats, grid, hidden=cfg.pair_hidden, layers=2, extra=bilinear)
    x1_hat = jnp.einsum("bcg,bg->bc", jax.nn.softmax(logits, -1), xc_BxG)
    return x1_hat, logits, prior_key


class DiffusionRanker(nn.Module):
  """Training-time wrapper: noises the true markdown positions, then denoises."""

  config: DiffusionConfig

  def setup(self):
    self.denoiser = Denoiser(self.config)

  def denoise(self, batch, x_BxC, t_B, deterministic: bool = True, sc_BxC=None, sc_on_B=None):
    return self.denoiser(batch, x_BxC, t_B, deterministic, sc_BxC, sc_on_B)

  def __call__(self, batch: Mapping[str, Array], deterministic: bool = True):
    cfg = self.config
    B, C = batch["cell_mask"].shape
    zeros = jnp.zeros((B, C), jnp.float32)
    if "target_key" not in batch:  # init / shape inference: no targets
      return _outputs(self.denoise(batch, zeros, jnp.zeros((B,)), deterministic))
    x1 = key_to_x(batch["target_key"].astype(jnp.float32))
    if cfg.objective == "pointwise":
      return {**_outputs(self.denoise(batch, zeros, jnp.zeros((B,)), deterministic)),
              "x1": x1, "x0": zeros, "x_t": zeros, "t": jnp.zeros((B,))}
    # The trainer passes one key as "dropout"; make_rng folds in a fresh
    # counter, so the noise is independent of the dropout masks. A
    # deterministic call (e.g. a validation loss) uses a fixed key.
    rng = self.make_rng("dropout") if not deterministic else jax.random.key(0)
    k_t, k_x, k_sc = jax.random.split(rng, 3)
    t_B = sample_times(k_t, (B,), cfg)
    if cfg.t0_prob > 0:  # some notebooks at t = 0: the one-shot task the sampler starts from
      t_B = jnp.where(jax.random.bernoulli(jax.random.fold_in(k_t, 1), cfg.t0_prob, (B,)), 0.0,
                      t_B)
    x0 = cfg.noise_std * jax.random.normal(k_x, (B, C))
    x_t = interpolate(x0, x1, t_B[:, None])
    sc, sc_on = None, None
    if cfg.self_condition:
      sc_on = jax.random.bernoulli(k_sc, cfg.self_cond_prob, (B,)).astype(jnp.float32)
      first = _outputs(self.denoise(batch, x_t, t_B, deterministic))
      sc = jax.lax.stop_gradient(first["pred"])
    return {**_outputs(self.denoise(batch, x_t, t_B, deterministic, sc, sc_on)), "x1": x1,
            "x0": x0, "x_t": x_t, "t": t_B}


def _outputs(out) -> dict[str, Array]:
  """The denoiser's output as a dict: "pred" (and "gap_logits" for the gap head)."""
  if isinstance(out, tuple):
    return {"pred": out[0], "gap_logits": out[1], "prior_key": out[2]}
  return {"pred": out}


def build(config: DiffusionConfig) -> nn.Module:
  return DiffusionRanker(config)


def loss_fn(outputs: Mapping[str, Array], batch: Mapping[str, Array],
            config: DiffusionConfig) -> tuple[Array, dict[str, Array]]:
  """Mean over real markdown cells; see the module docstring for each objective."""
  md = layers.markdown_mask(batch)
  n_md = jnp.maximum(md.sum(), 1.0)
  pred, x1 = outputs["pred"], outputs["x1"]
  if config.head == "gap":
    # x1-prediction through a gap softmax: the gap head's losses (CE of the
    # true gap, expected misplacement, L1 of the content-only prior key) plus
    # L1 of the mean position x1_hat.
    _, aux = layers.gap_loss({"key": outputs["prior_key"], "gap_logits": outputs["gap_logits"]},
                             batch, key_weight=config.prior_loss_weight,
                             gap_weight=config.gap_loss_weight, emd_weight=config.emd_loss_weight)
    x1_l1 = (jnp.abs(pred - x1) * md).sum() / n_md / 2  # key units
    loss = aux["loss"] + config.x1_loss_weight * x1_l1
    return loss, {**aux, "loss": loss, "prior_l1": aux["key_l1"], "key_l1": x1_l1}
  if config.objective == "pointwise":
    key_l1 = (jnp.abs(pred - x1) * md).sum() / n_md / 2  # in key units
    return key_l1, {"loss": key_l1, "key_l1": key_l1, "n_markdown": md.sum()}
  t = outputs["t"][:, None]
  if config.parameterization == "x1":
    err2 = (pred - x1) ** 2
  else:
    err2 = (pred - velocity_target(outputs["x0"], x1)) ** 2
  loss = (err2 * md).sum() / n_md
  x1_hat = to_x1(pred, outputs["x_t"], t, config.parameterization)
  key_l1 = (jnp.abs(x1_hat - x1) * md).sum() / n_md / 2
  return loss, {"loss": loss, "key_l1": key_l1, "n_markdown": md.sum()}


# --- sampling -------------------------------------------------------------------------
def sample(model: nn.Module, params, batch: Mapping[str, Array], x0_SxBxC,
           cfg: DiffusionConfig):
  """Final positions [S, B, C] from given noise (one Euler run per noise draw).

  With the gap head, also the gap probabilities of the last network
  evaluation (averaged over the last `prob_avg_steps`), [S, B, C, C + 1]:
  returns (positions, probabilities). With `sample_t_start` > 0 the run
  starts SDEdit-style (`sdedit_start`) and its K steps cover [t_start, 1].
  """
  steps, t_start = cfg.sample_steps, cfg.sample_t_start
  n_avg = min(cfg.prob_avg_steps, steps)

  def one(x0_BxC):
    B, C = x0_BxC.shape

    def apply(x, t, sc=None, sc_on=None):
      t_B = jnp.full((x.shape[0],), t, jnp.float32)
      return model.apply({"params": params}, batch, x, t_B, True, sc, sc_on,
                         method=DiffusionRanker.denoise)

    if cfg.head != "gap":
      x = x0_BxC
      if t_start > 0:
        x = sdedit_start(x0_BxC, to_x1(apply(x0_BxC, 0.0), x0_BxC, 0.0, cfg.parameterization),
                         t_start)
      return euler_sample(apply, x, steps, cfg.parameterization, t_start)

    def denoise_fn(x, t, aux, k):
      probs, sc, sc_on = aux
      x1_hat, logits, _ = apply(x, t, sc, sc_on)
      probs = probs + jnp.where(k >= steps - n_avg, jax.nn.softmax(logits, -1), 0.0)
      # The next step is conditioned on this step's estimate (self-conditioning).
      return x1_hat, (probs, x1_hat, jnp.ones((B,), jnp.float32))

    x, aux0 = x0_BxC, (jnp.zeros((B, C, C + 1), jnp.float32), jnp.zeros((B, C), jnp.float32),
                       jnp.zeros((B,), jnp.float32))
    if t_start > 0:
      # The one-shot estimate is also what the first refining step is
      # self-conditioned on.
      x1_hat = apply(x0_BxC, 0.0)[0]
      x, aux0 = sdedit_start(x0_BxC, x1_hat, t_start), (aux0[0], x1_hat, jnp.ones((B,)))
    x, (probs, _, _) = euler_sample_aux(denoise_fn, x, aux0, steps, cfg.parameterization,
                                        t_start)
    return x, probs / n_avg

  return jax.vmap(one)(x0_SxBxC)


def sdedit_start(x0, x1_hat, t_start: float):
  """The clean estimate `x1_hat` re-noised to time t_start with the run's own
  noise x0: x_{t_start} on the straight path from x0 to x1_hat (SDEdit, Meng et
  al. 2022). It is one Euler step of size t_start from (x0, t = 0), so the
  sampler's time grid is {0, t_start, t_start + (1 - t_start) / K, ..., 1}."""
  return interpolate(x0, x1_hat, t_start)


def combine(x_SxBxC, how: str) -> Array:
  return jnp.median(x_SxBxC, 0) if how == "median" else jnp.mean(x_SxBxC, 0)


def predict(model: nn.Module, params, batch: Mapping[str, Array], rng,
            cfg: DiffusionConfig) -> dict[str, Array]:
  """Jit-able: markdown keys [B, C] (and their spread over samples) for a batch.

  The gap head also returns "gap_probs" [B, C, C + 1], averaged over the S
  samples, which are decoded by least expected misplaced pairs (`markdown_belief`).
  """
  B, C = batch["cell_mask"].shape
  if cfg.objective == "pointwise":
    zeros = jnp.zeros((B, C), jnp.float32)
    out = model.apply({"params": params}, batch, zeros, jnp.zeros((B,)), True,
                      method=DiffusionRanker.denoise)
    if cfg.head == "gap":
      return {"key": x_to_key(out[0]), "key_std": jnp.zeros_like(out[0]),
              "gap_probs": jax.nn.softmax(out[1], -1)}
    return {"key": x_to_key(out), "key_std": jnp.zeros_like(out)}
  x0 = cfg.noise_std * jax.random.normal(rng, (cfg.num_samples, B, C))
  if cfg.head == "gap":
    xs, probs = sample(model, params, batch, x0, cfg)
    return {"key": x_to_key(combine(xs, cfg.combine)), "key_std": 0.5 * xs.std(0),
            "gap_probs": probs.mean(0)}
  xs = sample(model, params, batch, x0, cfg)
  return {"key": x_to_key(combine(xs, cfg.combine)), "key_std": 0.5 * xs.std(0)}


def markdown_belief(outputs: Mapping[str, np.ndarray], row: int, n_code: int, n_md: int,
                    config: DiffusionConfig) -> tuple[np.ndarray | None, np.ndarray]:
  """(sample-averaged gap probabilities or None for the scalar head, combined positions).

  The trainer decodes it (`jaxrank.decode.keys_from_belief`): the gap
  probabilities by least expected misplaced pairs, ties broken by the positions;
  for the scalar head the positions as they are.
  """
  return layers.gap_markdown_belief(outputs, row, n_code, n_md, use_gaps=config.head == "gap")
