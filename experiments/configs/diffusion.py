r"""Diffusion ranker: markdown positions denoised by a transformer over all cells.

See `jaxrank/models/diffusion.py` for the objective (rectified-flow matching),
the noise schedule (straight path, `noise_std`, time distribution) and sampling
(K Euler steps, S noise draws combined per cell). CPU-sized defaults.

  python -m experiments.train --flagfile=experiments/flags/diffusion.flags \
      --config.data.data_dir=../shared/data/nbcorpus --workdir=workspace/runs/diffusion
  python -m experiments.evaluate --workdir=workspace/runs/diffusion \
      --data_dir=../shared/data/nbcorpus --split=train --val_only
  python -m experiments.predict --workdir=workspace/runs/diffusion --data_dir=D --split=test \
      --output=submission.csv

Sampling steps / samples are read from the saved config at prediction time;
`benchmarks/bench_diffusion.py` sweeps them on one trained run. On frozen
encoder vectors (MiniLM from the store; see roberta_cells.py):

  python -m experiments.train --config=experiments/configs/diffusion.py:encoder ...

Its discrete successor, the cells ranker made iterative over markdown cells' gaps,
is experiments/configs/gap_diffusion.py (level with the cells ranker on three
Kaggle-kernel folds, where this one stays 0.02-0.05 below).
"""

import ml_collections

from experiments.configs import common


def get_config(features: str = "bow") -> ml_collections.ConfigDict:
  if features not in ("bow", "encoder"):
    raise ValueError(f"diffusion config: features {features!r}, expected 'bow' or 'encoder'")
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  c.model.name = "diffusion"
  # Cell vectors: the BOW BagEncoder, or a `cell_vec` field from the featurizer.
  c.model.embed_dim = 64
  c.model.hidden_dim = 128
  c.model.num_layers = 2
  c.model.term_dropout = 0.1
  # Transformer over cells.
  c.model.tf_layers = 2
  c.model.num_heads = 4
  c.model.mlp_dim = 256
  c.model.dropout = 0.1
  c.model.use_similarity = True
  c.model.use_lexical = True  # sim_lex pair features when the featurizer gives them
  # Output head: "gap" (softmax over gaps; x1_hat = its mean position) or "scalar".
  c.model.head = "gap"
  c.model.pair_hidden = 32
  c.model.use_bilinear = False  # learned content term: memorises training repositories
  c.model.gap_loss_weight = 1.0
  c.model.emd_loss_weight = 1.0
  c.model.x1_loss_weight = 1.0
  c.model.prior_loss_weight = 1.0
  c.model.self_condition = True  # denoiser also sees its previous clean estimate (+0.01 tau)
  c.model.self_cond_prob = 0.5
  # Objective and noise schedule.
  c.model.objective = "flow"  # or "pointwise" (same network, plain L1 regression)
  c.model.parameterization = "x1"  # or "velocity"
  c.model.noise_std = 1.0
  c.model.time_sampling = "logit_normal"  # or "uniform"
  c.model.logit_mean = 0.0
  c.model.logit_std = 1.0
  c.model.t0_prob = 0.0  # share of training notebooks at t = 0 (the one-shot task)
  # Sampling.
  c.model.sample_steps = 16
  c.model.num_samples = 4
  c.model.combine = "mean"  # or "median"
  # SDEdit-style start: one-shot estimate at t = 0, re-noised to t_start, K steps
  # over [t_start, 1]; 0 = K steps from pure noise.
  c.model.sample_t_start = 0.0
  c.model.prob_avg_steps = 1  # gap head: average the last n steps' gap probabilities
  c.model.crowding = 2.0  # gap head: joint gap assignment (decode.crowded_gaps); 0 = medians
  c.model.dtype = "float32"  # or "bfloat16" (compute dtype)

  # "bow": TF-IDF bags through the BagEncoder; "encoder": cached frozen
  # store-encoder vectors (`--config=experiments/configs/diffusion.py:encoder`).
  c.features = (common.encoder_features() if features == "encoder"
                else common.bow_features())

  c.data = common.data()

  c.optim = common.optim()

  c.train = common.train()

  c.lock()
  return c
