"""Diffusion ranker: path maths with oracle denoisers, equivariance, resume, entry points."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrank import decode, features, train
from jaxrank.data import batching
from jaxrank.data import notebooks as nb_io
from jaxrank.models import diffusion
from tests import helpers
from tests.tiny import tiny_diffusion_config



# --- path maths with oracle denoisers ------------------------------------------------
@pytest.mark.parametrize("parameterization", ["x1", "velocity"])
@pytest.mark.parametrize("steps", [1, 3, 50])
def test_true_denoiser_of_a_point_mass_recovers_positions(parameterization, steps):
  x1 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 7)), jnp.float32)
  x0 = jax.random.normal(jax.random.key(1), x1.shape)

  def oracle(x, t):  # the exact denoiser of a point mass at x1
    return x1 if parameterization == "x1" else (x1 - x) / (1.0 - t)

  out = diffusion.euler_sample(oracle, x0, steps, parameterization)
  np.testing.assert_allclose(np.asarray(out), np.asarray(x1), atol=2e-5)
  # The straight path itself: x_t at t=0 is noise, at t=1 the data; v is constant.
  np.testing.assert_allclose(diffusion.interpolate(x0, x1, 0.0), x0)
  np.testing.assert_allclose(diffusion.interpolate(x0, x1, 1.0), x1)
  x_half = diffusion.interpolate(x0, x1, 0.5)
  v = diffusion.to_velocity(x1, x_half, 0.5, "x1")
  np.testing.assert_allclose(v, diffusion.velocity_target(x0, x1), atol=1e-5)
  np.testing.assert_allclose(diffusion.to_x1(v, x_half, 0.5, "velocity"), x1, atol=1e-5)


def test_true_denoiser_of_a_two_point_mixture_samples_its_modes():
  """Data = a or b (1/2 each), noise N(0, s^2). The exact posterior-mean denoiser
  with one step gives the mixture mean; with many steps every sample ends at a
  mode and both modes are hit about equally often."""
  a, b, s = -0.6, 0.8, 1.0

  def oracle_x1(x, t):
    # p(x_t | x1) = N(t x1, ((1 - t) s)^2): posterior weights of the two modes.
    var = ((1.0 - t) * s) ** 2
    la, lb = -(x - t * a) ** 2 / (2 * var), -(x - t * b) ** 2 / (2 * var)
    wa = jax.nn.sigmoid(la - lb)
    return wa * a + (1 - wa) * b

  x0 = s * jax.random.normal(jax.random.key(0), (4000,))
  one = diffusion.euler_sample(oracle_x1, x0, 1, "x1")
  np.testing.assert_allclose(np.asarray(one), (a + b) / 2, atol=1e-6)
  many = np.asarray(diffusion.euler_sample(oracle_x1, x0, 400, "x1"))
  dist = np.minimum(np.abs(many - a), np.abs(many - b))
  assert np.quantile(dist, 0.99) < 0.02, np.quantile(dist, [0.5, 0.99, 1.0])
  frac_b = np.mean(np.abs(many - b) < np.abs(many - a))
  assert 0.45 < frac_b < 0.55
  # Velocity parameterisation of the same oracle gives the same samples.
  vel = diffusion.euler_sample(lambda x, t: (oracle_x1(x, t) - x) / (1 - t), x0, 400, "velocity")
  np.testing.assert_allclose(np.asarray(vel), many, atol=1e-4)


def _gaussian_prior_oracle(m, s, sigma):
  """The exact x1-denoiser when x1 ~ N(m, s^2) per cell and x0 ~ N(0, sigma^2):
  E[x1 | x_t] = m + t s^2 (x_t - t m) / (t^2 s^2 + (1 - t)^2 sigma^2); at t = 0 it is m."""
  def oracle(x, t):
    return m + t * s ** 2 * (x - t * m) / (t ** 2 * s ** 2 + (1 - t) ** 2 * sigma ** 2)
  return oracle


@pytest.mark.parametrize("steps", [1, 200])
def test_sdedit_start_refines_the_one_shot_estimate(steps):
  """From pure noise the exact flow samples the data distribution (spread s);
  started SDEdit-style, the spread shrinks towards the one-shot estimate m as
  t_start grows, and t_start -> 1 returns m itself."""
  m = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 9)), jnp.float32)
  s, sigma = 0.3, 1.0
  oracle = _gaussian_prior_oracle(m, s, sigma)
  x0 = sigma * jax.random.normal(jax.random.key(0), (3000, 9))

  def run(t_start):
    x = x0
    if t_start > 0:
      x = diffusion.sdedit_start(x0, oracle(x0, 0.0), t_start)
    return np.asarray(diffusion.euler_sample(oracle, x, steps, "x1", t_start))

  spread = {ts: float(np.std(run(ts) - np.asarray(m))) for ts in (0.0, 0.5, 0.9, 0.999)}
  if steps > 1:  # fine enough to sample the data spread from pure noise
    assert abs(spread[0.0] - s) < 0.02, spread
    assert spread[0.0] > spread[0.5] > spread[0.9] > spread[0.999], spread
  else:  # one step from pure noise is the posterior mean m
    assert spread[0.0] < 1e-5 < spread[0.5], spread
  np.testing.assert_allclose(run(0.999), np.broadcast_to(m, x0.shape), atol=0.01)
  # t_start = 0 is the plain sampler: the same arithmetic, the same numbers.
  np.testing.assert_array_equal(np.asarray(diffusion.euler_sample(oracle, x0, steps, "x1")),
                                run(0.0))


def test_time_sampling_and_config_validation():
  for how in diffusion.TIME_SAMPLING:
    t = diffusion.sample_times(jax.random.key(0), (5000,), diffusion.DiffusionConfig(
        time_sampling=how))
    assert float(t.min()) > 0 and float(t.max()) < 1 and abs(float(t.mean()) - 0.5) < 0.02
  with pytest.raises(ValueError, match="parameterization='eps'"):
    diffusion.DiffusionConfig(parameterization="eps")
  with pytest.raises(ValueError, match="head='gap' predicts the clean position"):
    diffusion.DiffusionConfig(parameterization="velocity", head="gap")
  for bad in [{"sample_t_start": 1.0}, {"sample_t_start": -0.1}, {"t0_prob": 1.5},
              {"prob_avg_steps": 0}]:
    with pytest.raises(ValueError, match=f"{next(iter(bad))}="):
      diffusion.DiffusionConfig(**bad)


# --- the network on real sample batches -----------------------------------------------
@pytest.fixture(scope="module")
def batch_and_params():
  """One collated sample batch (3 notebooks with markdown) + initialised params."""
  nbs = [nb for nb in nb_io.load_split(nb_io.sample_data_dir(), "train")
         if 3 <= nb.n_markdown and nb.n_cells <= 40][:3]
  cfg = tiny_diffusion_config()
  featurizer, items = features.fit_any(cfg.features, nbs)
  arrays = batching.collate(items, 40)
  fam = train.family_from_config(cfg, featurizer.vocab_size)
  model = fam.build()
  x = {k: v for k, v in arrays.items() if not k.startswith("target_")}
  params = model.init({"params": jax.random.key(0)}, x, deterministic=True)["params"]
  return nbs, arrays, fam, model, params


def _permute_markdown(arrays, rng):
  """Shuffles the markdown rows of every notebook; returns arrays and row perms."""
  out = {k: v.copy() for k, v in arrays.items()}
  perms = []
  for r in range(arrays["cell_mask"].shape[0]):
    n, nc = int(arrays["cell_mask"][r].sum()), int(arrays["n_code"][r])
    perm = np.arange(arrays["cell_mask"].shape[1])
    perm[nc:n] = nc + rng.permutation(n - nc)
    for k, v in arrays.items():
      if k == "n_code":
        continue
      out[k][r] = v[r][perm]
      if k in batching.PAIR_FIELDS:
        out[k][r] = out[k][r][:, perm]
    perms.append(perm)
  return out, np.stack(perms)


SAMPLERS = [{}, {"sample_t_start": 0.5, "prob_avg_steps": 2}]  # from noise; SDEdit-style


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_denoiser_and_sampler_are_equivariant_to_markdown_permutations(batch_and_params, sampler):
  _, arrays, fam, model, params = batch_and_params
  perm_arrays, perms = _permute_markdown(arrays, np.random.default_rng(0))
  assert not np.array_equal(perms, np.broadcast_to(np.arange(perms.shape[1]), perms.shape))
  B, C = arrays["cell_mask"].shape
  x = np.random.default_rng(1).normal(size=(B, C)).astype(np.float32)
  x_perm = np.take_along_axis(x, perms, 1)
  t = jnp.array([0.1, 0.5, 0.9])
  strip = lambda a: {k: jnp.asarray(v) for k, v in a.items() if not k.startswith("target_")}
  apply = lambda a, x: model.apply({"params": params}, strip(a), x, t, True,
                                   method=diffusion.DiffusionRanker.denoise)
  (out, logits, _), (out_p, logits_p, _) = apply(arrays, x), apply(perm_arrays, x_perm)
  out, out_p, logits, logits_p = map(np.asarray, (out, out_p, logits, logits_p))
  mask = arrays["cell_mask"]
  np.testing.assert_allclose(np.take_along_axis(out, perms, 1)[mask], out_p[mask], atol=1e-5)
  # Gap logits: rows move with the markdown cells; the gaps (code) stay put.
  np.testing.assert_allclose(np.take_along_axis(logits, perms[..., None], 1)[mask],
                             logits_p[mask], atol=1e-4)
  assert np.std(out[mask]) > 1e-4  # not trivially constant
  # The whole sampler, given noise permuted the same way.
  cfg = dataclasses.replace(fam.cfg, **sampler)
  x0 = np.random.default_rng(2).normal(size=(2, B, C)).astype(np.float32)
  xs, probs = map(np.asarray, diffusion.sample(model, params, strip(arrays), x0, cfg))
  xs_p, probs_p = map(np.asarray, diffusion.sample(model, params, strip(perm_arrays),
                                                   np.take_along_axis(x0, perms[None], 2), cfg))
  np.testing.assert_allclose(np.take_along_axis(xs, perms[None], 2)[:, mask], xs_p[:, mask],
                             atol=1e-4)
  np.testing.assert_allclose(np.take_along_axis(probs, perms[None, ..., None], 2)[:, mask],
                             probs_p[:, mask], atol=1e-4)


def test_self_conditioning_input_is_used_only_when_switched_on(batch_and_params):
  _, arrays, fam, model, params = batch_and_params
  assert fam.cfg.self_condition
  B, C = arrays["cell_mask"].shape
  x = {k: jnp.asarray(v) for k, v in arrays.items() if not k.startswith("target_")}
  xt, t = jnp.zeros((B, C)), jnp.full((B,), 0.5)
  sc = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (B, C)), jnp.float32)
  den = lambda *a: np.asarray(model.apply({"params": params}, x, xt, t, True, *a,
                                          method=diffusion.DiffusionRanker.denoise)[1])
  off, off2 = den(None, None), den(sc, jnp.zeros((B,)))
  on = den(sc, jnp.ones((B,)))
  mask = arrays["cell_mask"]
  np.testing.assert_allclose(off[mask], off2[mask], atol=1e-6)  # flag off: estimate ignored
  assert np.abs(on[mask] - off[mask]).max() > 1e-4


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_is_deterministic_given_the_seed(batch_and_params, sampler):
  nbs, arrays, fam, model, params = batch_and_params
  x = {k: jnp.asarray(v) for k, v in arrays.items() if not k.startswith("target_")}
  cfg = dataclasses.replace(fam.cfg, **sampler)
  fn = jax.jit(lambda p, b, r: diffusion.predict(model, p, b, r, cfg))
  res = fn(params, x, jax.random.key(3))
  a, b = res["key"], fn(params, x, jax.random.key(3))["key"]
  c = fn(params, x, jax.random.key(4))["key"]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))
  out = jax.device_get(res)
  probs = np.asarray(out["gap_probs"])
  for row, nb in enumerate(nbs):  # a distribution over the notebook's own gaps only
    np.testing.assert_allclose(probs[row, :nb.n_cells, :nb.n_code + 1].sum(-1), 1, atol=1e-5)
  for row, nb in enumerate(nbs):
    keys = train.markdown_keys(diffusion, out, row, nb.n_code, nb.n_markdown, cfg)
    order = decode.order_from_keys(nb, keys)
    assert sorted(order) == sorted(nb.cell_ids)
    assert [c for c in order if c in set(nb.code_ids)] == list(nb.code_ids)


def _reference_sample(model, params, x, x0_BxC, cfg):
  """The gap-head sampler written out step by step: (final positions, averaged
  gap probabilities of the last prob_avg_steps evaluations)."""
  B = x0_BxC.shape[0]
  apply = lambda xt, t, sc, on: model.apply({"params": params}, x, xt, jnp.full((B,), t), True,
                                            sc, on, method=diffusion.DiffusionRanker.denoise)
  steps, t_start = cfg.sample_steps, cfg.sample_t_start
  xt, sc, on = x0_BxC, None, None
  if t_start > 0:  # the one-shot estimate at t = 0, re-noised to t_start with the same noise
    sc, on = apply(x0_BxC, 0.0, None, None)[0], jnp.ones((B,))
    xt = (1 - t_start) * x0_BxC + t_start * sc
  dt, probs = (1 - t_start) / steps, []
  for k in range(steps):
    t = t_start + k * dt
    x1_hat, logits, _ = apply(xt, t, sc, on)
    probs.append(jax.nn.softmax(logits, -1))
    xt = xt + dt * (x1_hat - xt) / (1 - t)
    sc, on = x1_hat, jnp.ones((B,))
  return np.asarray(xt), np.mean(np.stack(probs[-cfg.prob_avg_steps:]), 0)


@pytest.mark.parametrize("t_start,steps,avg", [(0.0, 3, 1), (0.6, 3, 2), (0.3, 1, 4)])
def test_sampler_matches_a_step_by_step_reference(batch_and_params, t_start, steps, avg):
  """t_start = 0 is the sampler from pure noise (K steps over [0, 1], last step's
  probabilities); t_start > 0 adds the t = 0 estimate, re-noised, and K steps
  over [t_start, 1]; probabilities averaged over the last `avg` steps."""
  _, arrays, fam, model, params = batch_and_params
  cfg = dataclasses.replace(fam.cfg, sample_steps=steps, sample_t_start=t_start,
                            prob_avg_steps=avg)
  x = {k: jnp.asarray(v) for k, v in arrays.items() if not k.startswith("target_")}
  B, C = arrays["cell_mask"].shape
  x0 = jax.random.normal(jax.random.key(5), (2, B, C))
  xs, probs = map(np.asarray, diffusion.sample(model, params, x, x0, cfg))
  mask = arrays["cell_mask"]
  for i in range(2):
    ref_x, ref_p = _reference_sample(model, params, x, x0[i], cfg)
    np.testing.assert_allclose(xs[i][mask], ref_x[mask], atol=1e-5)
    np.testing.assert_allclose(probs[i][mask], ref_p[mask], atol=1e-5)


def test_t0_prob_trains_some_notebooks_at_pure_noise(batch_and_params):
  _, arrays, fam, model, params = batch_and_params
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  t = lambda p: np.asarray(model.clone(config=dataclasses.replace(fam.cfg, t0_prob=p)).apply(
      {"params": params}, batch, deterministic=False, rngs={"dropout": jax.random.key(1)})["t"])
  assert (t(0.0) > 0).all() and (t(1.0) == 0).all()


@pytest.mark.parametrize("objective,param,head,sc", [
    ("flow", "x1", "gap", True), ("flow", "x1", "gap", False), ("pointwise", "x1", "gap", False),
    ("flow", "x1", "scalar", False), ("flow", "velocity", "scalar", False),
    ("pointwise", "x1", "scalar", False)])
def test_loss_is_finite_and_has_gradients(batch_and_params, objective, param, head, sc):
  _, arrays, fam, model, params = batch_and_params
  cfg = dataclasses.replace(fam.cfg, objective=objective, parameterization=param, head=head,
                            self_condition=sc)
  if (head, sc) != ("gap", True):
    x = {k: jnp.asarray(v) for k, v in arrays.items() if not k.startswith("target_")}
    params = model.clone(config=cfg).init({"params": jax.random.key(0)}, x)["params"]
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}

  def loss(p):
    out = model.clone(config=cfg).apply({"params": p}, batch, deterministic=False,
                                        rngs={"dropout": jax.random.key(0)})
    return diffusion.loss_fn(out, batch, cfg)

  (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
  assert np.isfinite(float(value)) and float(value) > 0
  assert float(aux["n_markdown"]) == float((arrays["cell_mask"] & ~arrays["is_code"]).sum())
  assert float(jax.tree.reduce(lambda s, g: s + jnp.abs(g).sum(), grads, 0.0)) > 0


def test_cell_vectors_replace_the_bag_encoder(batch_and_params):
  """A `vec` field (cached encoder vectors) is used instead of the bags."""
  _, arrays, fam, model, _ = batch_and_params
  B, C = arrays["cell_mask"].shape
  x = {k: jnp.asarray(v) for k, v in arrays.items()
       if not k.startswith("target_") and k not in ("ids", "weights")}
  x["vec"] = jnp.asarray(np.random.default_rng(0).normal(size=(B, C, 12)), jnp.float32)
  params = model.init({"params": jax.random.key(0)}, x, deterministic=True)["params"]
  assert "cell_proj" in params["denoiser"] and "cells" not in params["denoiser"]
  out = diffusion.predict(model, params, x, jax.random.key(0), fam.cfg)
  assert out["key"].shape == (B, C) and np.isfinite(np.asarray(out["key"])).all()


# --- training loop ---------------------------------------------------------------------
@pytest.mark.slow  # the shared loop's exact resume: tests/test_train.py, test_kill_resume.py
def test_two_steps_stop_resume_third_equals_three_uninterrupted(tmp_path):
  cfg = tiny_diffusion_config(**{"data.n_folds": 1})
  # Both runs start from one saved featurizer. A fresh run featurizes with
  # fit_transform, a resumed one with transform of the loaded featurizer, and
  # bow.csr_to_bags orders (and, at the max_terms cut, picks among tied)
  # terms by CSR column order, which differs between those two paths; the
  # tiny float differences then flip near-zero Adam updates. That is a
  # featurizer issue, not the model's: keep it out of this test.
  featurizer, _ = features.fit_any(cfg.features, train.load_notebooks(cfg.data))
  for run in ("a", "b"):
    features.save_any(cfg.features.kind, featurizer, tmp_path / run)
  helpers.stop_resume_equals_uninterrupted(cfg, tmp_path)


# --- entry points ------------------------------------------------------------------------
@pytest.mark.slow  # diffusion through the entry points: test_rankers (diffusion_minilm.flags)
def test_train_evaluate_predict_with_the_diffusion_flagfile(tmp_path):
  tiny = ["--config.data.max_notebooks=30", "--config.data.n_folds=2", "--config.train.steps=2",
          "--config.data.buckets=(128,1024)", "--config.model.hidden_dim=16",
          "--config.model.mlp_dim=16", "--config.model.embed_dim=8", "--config.model.tf_layers=1",
          "--config.features.word_vocab=500", "--config.model.sample_steps=2"]
  run, cfg = helpers.train_evaluate_predict(tmp_path, "experiments/flags/diffusion.flags", tiny)
  assert run["steps"] == 2 and run["model"] == "diffusion"
  assert cfg["model"]["num_samples"] == 4 and cfg["model"]["sample_steps"] == 2  # flagfile, override
