"""Gap diffusion: a discrete (absorbing-state) diffusion over each markdown cell's gap.

The state of a notebook is, for every markdown cell, either its gap between
code cells (g = 0..n_code: *placed*) or MASK. Noise absorbs: at mask ratio r
each markdown cell is masked with probability r, independently, so r = 1 is the
one-shot task (nothing placed) and r -> 0 is nearly the answer (Austin et al.
2021, D3PM's absorbing state; the masked-token objective of MaskGIT, Chang et
al. 2022, and of masked diffusion LMs, Sahoo et al. 2024).

Denoiser: the cells ranker (`jaxrank.models.rankers.CellsRanker`, the project's
best one-shot network) reading the state as two extra batch fields,
`placed_gap` and `mask_ratio`:
  * a placed markdown cell enters the transformer over cells at its gap's
    centre, embedded as code cells' positions are, plus a learned vector;
  * the gap head's pair features gain, per (m, g), how similar m is to the
    markdown cells placed in g and its neighbours (`pairs.placed_features`):
    a heading and the text under it share a gap, so a placed neighbour is
    parameter-free evidence, like a similar code cell.
It predicts every masked cell's gap distribution; the loss is the cells
ranker's gap loss (CE of the true gap, expected misplacement, L1 of the key)
over the masked cells only. Training draws r per notebook from the cosine
schedule r = cos(pi u / 2), u ~ U(0, 1) (MaskGIT's; it favours high mask ratios,
where the sampler starts).

Sampling (`predict`, MaskGIT's confidence-ordered unmasking): K steps from all
masked; after step k, cos(pi (k + 1) / (2K)) of each notebook's markdown cells
stay masked. At each step the network scores every masked cell; the most
confident ones (largest top probability, plus Gumbel noise of scale
`temperature` x the remaining share with S > 1 samples) are placed in their
most likely gap, and *that step's* gap distribution is what the cell is
decoded with. The S samples' distributions are averaged, and decoded as every
gap-head ranker's are (`jaxrank.decode`: least expected misplaced pairs, the
crowding price, the notebook's own section order). K = 1 places every cell
from the all-masked state: the one-shot cells ranker, exactly.

Self-conditioning (`self_condition`, after Chen et al. 2022's analog bits): the
denoiser also reads a previous estimate of every markdown cell's gap distribution
(`rankers.SELF_COND`): as pair features (its own previous log probability of g, and
how similar it is to the cells expected in g and its neighbours,
`pairs.estimate_features`) and in the transformer over cells (its expected gap
centre, blurred, and its confidence). Training runs a first pass on the same state
(no gradient) and a share `self_condition` of the notebooks read it; in sampling
each step after the first reads the one before's distributions, so the first reads
nothing and K = 1 is still the one-shot forward. `unrolled` (SUNDAE's unrolled
denoising, Savinov et al. 2022) trains a share of notebooks on the sampler's own
second step: the first pass from all masked, its most confident cells placed at
their most likely gap, right or wrong. `sampler="refine"` places nothing: each step re-predicts every cell from the
last step's estimate.

`objective="one_shot"` trains the same network at r = 1 only: the matched
one-shot twin (`benchmarks/bench_diffusion.py`). Deterministic for a seed.

Measured (bench_diffusion's docstring; three Kaggle-kernel folds, seed 0): without
self-conditioning the steps do not pay (K = 8: 0.8393 +- 0.021, K = 1 0.8387, the
twin 0.8398): the placed cells carry little about the others' gaps. With it
(`self_condition=0.5`, `full_mask_prob=0.5`, `placed_in_gap_keys`), K = 4 scores
0.8423 +- 0.019 against 0.8378 at K = 1 (above it on every fold) and 0.8398 for the
twin; the cells ranker is 0.8394. Seed 1: 0.8422 against 0.8385 and 0.8412 (the twin
wins on Surfing-Ninja, loses on kaggleScape by 0.0067). Most of the gain is re-reading
the whole first estimate: `sampler="refine"` with K = 2 gets most of it (Surfing-Ninja: 0.8385 against 0.8352
at K = 1 and 0.8394 unmasking). `unrolled=0.5` was worse there (K = 4: 0.8366).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrank.models import layers, rankers
from jaxrank.models.rankers import MASK_RATIO, PLACED, SELF_COND

Array = jax.Array

OBJECTIVES = ("masked", "one_shot")
MASK_SCHEDULES = ("cosine", "uniform")
SAMPLERS = ("unmask", "refine")


@dataclasses.dataclass(frozen=True)
class GapDiffusionConfig(rankers.CellsConfig):
  objective: str = "masked"  # or "one_shot": the same network trained at mask ratio 1 only
  mask_schedule: str = "cosine"  # training mask ratio: cos(pi u / 2) or u, u ~ U(0, 1)
  sample_steps: int = 8  # K unmasking steps (1 = one-shot)
  num_samples: int = 1  # S unmasking orders, their gap distributions averaged
  temperature: float = 1.0  # Gumbel noise on the confidences (S > 1), annealed to 0
  # Share of training notebooks at mask ratio 1 (the one-shot task, where sampling starts).
  full_mask_prob: float = 0.0
  # With use_bilinear: each gap's key also reads the mean transformer state of the markdown
  # cells placed in it, so the learned term can match a cell against its placed neighbours.
  placed_in_gap_keys: bool = False
  # Self-conditioning (Chen et al. 2022): the share of training notebooks whose
  # denoiser also reads its own previous estimate of every markdown cell's gap
  # (a first pass on the same state, no gradient); sampling step k > 0 reads step
  # k - 1's. 0 = off (the batch has no estimate field).
  self_condition: float = 0.0
  # "unmask": K confidence-ordered steps, each cell decoded from the step that placed it.
  # "refine" (needs self_condition): nothing is placed; each of the K steps re-predicts
  # every cell from the last step's estimate, the last step's distributions decoded.
  sampler: str = "unmask"
  # Unrolled training (SUNDAE's, Savinov et al. 2022): the share of training notebooks whose
  # placed cells are the model's own first guesses, as the sampler's second step sees them:
  # a first pass from all masked, its most confident cells placed at their most likely gap
  # (right or wrong), the rest denoised reading that pass as their estimate. With it, every
  # self-conditioning estimate comes from that all-masked pass.
  unrolled: float = 0.0

  def __post_init__(self):
    layers.check_sampler_config(
        "gap_diffusion", [("objective", self.objective, OBJECTIVES),
                          ("mask_schedule", self.mask_schedule, MASK_SCHEDULES),
                          ("sampler", self.sampler, SAMPLERS)],
        self.sample_steps, self.num_samples)
    for name in ("full_mask_prob", "self_condition", "unrolled"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"gap_diffusion config: {name}={getattr(self, name)} must be "
                         "in [0, 1]")
    if self.sampler == "refine" and self.self_condition == 0:
      raise ValueError("gap_diffusion config: sampler='refine' needs self_condition > 0 (its "
                       "steps differ only by the estimate they read)")
    if self.decode != "gap":
      raise ValueError("gap_diffusion config: decode must be 'gap' (it predicts gap "
                       "distributions)")


def still_masked(n_md_B: Array, step: int, steps: int) -> Array:
  """Markdown cells left masked after step `step` (0-based) of `steps`: floor(n cos(pi s / 2K))
  for s = step + 1; 0 after the last step."""
  if step + 1 >= steps:
    return jnp.zeros_like(n_md_B)
  share = math.cos(math.pi / 2 * (step + 1) / steps)
  return jnp.floor(n_md_B.astype(jnp.float32) * share).astype(n_md_B.dtype)


def mask_ratios(rng, shape, schedule: str) -> Array:
  u = jax.random.uniform(rng, shape)
  return jnp.cos(jnp.pi / 2 * u) if schedule == "cosine" else 1.0 - u


def with_state(batch: Mapping[str, Array], placed_gap_BxC: Array,
               estimate_BxCxG: Array | None = None) -> dict[str, Array]:
  """The batch with a denoising state: the placed gaps (-1 = masked) and the masked share,
  and with self-conditioning the previous gap estimate (zeros = none; placed cells: their
  gap, one-hot)."""
  md = batch["cell_mask"] & ~batch["is_code"]
  placed_gap_BxC = jnp.where(md, placed_gap_BxC, -1).astype(jnp.int32)
  n_md = jnp.maximum(md.sum(-1), 1).astype(jnp.float32)
  ratio = (md & (placed_gap_BxC < 0)).sum(-1).astype(jnp.float32) / n_md
  state = {**batch, PLACED: placed_gap_BxC, MASK_RATIO: ratio}
  if estimate_BxCxG is not None:
    G = estimate_BxCxG.shape[-1]
    placed = (placed_gap_BxC >= 0)[..., None]
    est = jnp.where(placed, jax.nn.one_hot(placed_gap_BxC, G), estimate_BxCxG)
    state[SELF_COND] = jnp.where(md[..., None], est, 0.0).astype(jnp.float32)
  return state


def no_estimate(batch: Mapping[str, Array]) -> Array:
  B, C = batch["cell_mask"].shape
  return jnp.zeros((B, C, C + 1), jnp.float32)


def gap_probs(out: Mapping[str, Array]) -> Array:
  return jax.nn.softmax(out["gap_logits"].astype(jnp.float32), -1)


class GapDiffusionRanker(nn.Module):
  """Training-time wrapper: masks the true gaps at a random ratio, then denoises."""

  config: GapDiffusionConfig

  def setup(self):
    self.denoiser = rankers.CellsRanker(self.config)

  def denoise(self, batch, placed_gap_BxC, deterministic: bool = True, estimate_BxCxG=None):
    if self.config.self_condition > 0 and estimate_BxCxG is None:
      estimate_BxCxG = no_estimate(batch)
    return self.denoiser(with_state(batch, placed_gap_BxC, estimate_BxCxG), deterministic)

  def __call__(self, batch: Mapping[str, Array], deterministic: bool = True):
    cfg = self.config
    B, C = batch["cell_mask"].shape
    none = jnp.full((B, C), -1, jnp.int32)
    if "target_gap" not in batch or cfg.objective == "one_shot":
      return {**self.denoise(batch, none, deterministic), "placed": none >= 0}
    # The trainer passes one key as "dropout"; make_rng folds in a fresh
    # counter, so the masks are independent of the dropout masks.
    rng = self.make_rng("dropout") if not deterministic else jax.random.key(0)
    k_r, k_m = jax.random.split(rng)
    ratio_B = mask_ratios(k_r, (B,), cfg.mask_schedule)
    if cfg.full_mask_prob > 0:
      full = jax.random.bernoulli(jax.random.fold_in(k_r, 1), cfg.full_mask_prob, (B,))
      ratio_B = jnp.where(full, 1.0, ratio_B)
    keep = jax.random.uniform(k_m, (B, C)) >= ratio_B[:, None]
    placed = jnp.where(keep, batch["target_gap"], -1)
    estimate = None
    if cfg.unrolled > 0:
      # The sampler's first step, then its second's state: the first pass's most confident
      # cells (as many as the mask keeps) placed at their most likely gap.
      first = jax.lax.stop_gradient(gap_probs(self.denoise(batch, none, deterministic)))
      md = batch["cell_mask"] & ~batch["is_code"]
      conf = jnp.where(md, first.max(-1), -1.0)
      rank = jnp.argsort(jnp.argsort(-conf, -1, stable=True), -1, stable=True)
      own = md & (rank < (keep & md).sum(-1, keepdims=True))
      use_own = jax.random.bernoulli(jax.random.fold_in(k_r, 3), cfg.unrolled, (B,))
      placed = jnp.where(use_own[:, None], jnp.where(own, first.argmax(-1), -1), placed)
    elif cfg.self_condition > 0:
      # A first pass on the same state (no gradient) gives the estimate.
      first = jax.lax.stop_gradient(gap_probs(self.denoise(batch, placed, deterministic)))
    if cfg.self_condition > 0:
      # A share `self_condition` of the notebooks (and every unrolled one) read the first
      # pass as their estimate; the rest read none.
      use = jax.random.bernoulli(jax.random.fold_in(k_r, 2), cfg.self_condition, (B,))
      if cfg.unrolled > 0:
        use = use | use_own
      estimate = jnp.where(use[:, None, None], first, 0.0)
    state = with_state(batch, placed, estimate)
    return {**self.denoiser(state, deterministic), "placed": state[PLACED] >= 0}


def build(config: GapDiffusionConfig) -> nn.Module:
  return GapDiffusionRanker(config)


def loss_fn(outputs: Mapping[str, Array], batch: Mapping[str, Array], config: GapDiffusionConfig
            ) -> tuple[Array, dict[str, Array]]:
  """The cells ranker's gap loss over the masked markdown cells only."""
  masked = {**batch, "cell_mask": batch["cell_mask"] & ~outputs["placed"]}
  loss, aux = layers.gap_loss(outputs, masked, key_weight=config.key_loss_weight,
                              gap_weight=config.gap_loss_weight,
                              emd_weight=config.emd_loss_weight,
                              size_power=config.loss_size_power)
  return loss, {**aux, "placed_share": outputs["placed"].sum() / jnp.maximum(
      layers.markdown_mask(batch).sum(), 1.0)}


def unmask(model: nn.Module, params, batch: Mapping[str, Array], rng, cfg: GapDiffusionConfig,
           steps: int | None = None) -> tuple[Array, Array, Array]:
  """One unmasking run: (gap probabilities [B, C, C + 1] and keys [B, C], each cell's
  from the step that placed it; the placed gaps [B, C])."""
  steps = steps or cfg.sample_steps
  B, C = batch["cell_mask"].shape
  md = batch["cell_mask"] & ~batch["is_code"]
  n_md = md.sum(-1).astype(jnp.int32)
  placed = jnp.full((B, C), -1, jnp.int32)
  probs = jnp.zeros((B, C, C + 1), jnp.float32)
  keys = jnp.zeros((B, C), jnp.float32)
  estimate = None  # self-conditioning: the last step's distributions (none at step 0)
  for k in range(steps):  # K is small and static: unrolled
    extra = (estimate,) if cfg.self_condition > 0 else ()
    out = model.apply({"params": params}, batch, placed, True, *extra, method="denoise")
    p = gap_probs(out)
    if cfg.self_condition > 0:
      estimate = p
    if cfg.sampler == "refine":  # nothing placed: every cell keeps the latest step's
      probs, keys = p, out["key"].astype(jnp.float32)
      continue
    masked = md & (placed < 0)
    conf = jnp.log(p.max(-1) + 1e-12)
    if cfg.num_samples > 1 and cfg.temperature > 0:
      noise = jax.random.gumbel(jax.random.fold_in(rng, k), (B, C))
      conf = conf + cfg.temperature * (1.0 - (k + 1) / steps) * noise
    conf = jnp.where(masked, conf, -jnp.inf)
    rank = jnp.argsort(jnp.argsort(-conf, -1, stable=True), -1, stable=True)
    n_place = masked.sum(-1) - still_masked(n_md, k, steps)
    now = masked & (rank < n_place[:, None])
    placed = jnp.where(now, p.argmax(-1).astype(jnp.int32), placed)
    probs = jnp.where(now[..., None], p, probs)
    keys = jnp.where(now, out["key"].astype(jnp.float32), keys)
  return probs, keys, placed


def predict(model: nn.Module, params, batch: Mapping[str, Array], rng,
            cfg: GapDiffusionConfig) -> dict[str, Array]:
  """Jit-able: the S unmasking runs' gap distributions averaged ("gap_probs"), and keys."""
  steps = 1 if cfg.objective == "one_shot" else cfg.sample_steps
  rngs = jax.random.split(rng, cfg.num_samples)
  probs, keys, _ = jax.vmap(lambda r: unmask(model, params, batch, r, cfg, steps))(rngs)
  return {"key": keys.mean(0), "gap_probs": probs.mean(0)}


def markdown_belief(outputs: Mapping[str, np.ndarray], row: int, n_code: int, n_md: int,
                    config: GapDiffusionConfig) -> tuple[np.ndarray | None, np.ndarray]:
  return layers.gap_markdown_belief(outputs, row, n_code, n_md)


def pretrained_params(params, cfg, weights):
  """Family hook: a named encoder (cell_input="tokens") goes into the denoiser's tree."""
  if "denoiser" not in params:
    return params
  return {**params, "denoiser": rankers.pretrained_params(params["denoiser"], cfg, weights)}
