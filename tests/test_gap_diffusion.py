"""Gap diffusion (jaxrank.models.gap_diffusion): the unmasking schedule, the placement
features, an oracle denoiser whose cells depend on each other, K = 1 as the one-shot
forward, equivariance to markdown rows, determinism for a seed, the masked loss, and
train -> stop -> resume -> predict on the sample data."""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import gap_diffusion as gap_diffusion_config
from jaxrank import features, train
from jaxrank.data import batching
from jaxrank.models import gap_diffusion as gd
from jaxrank.models import pairs, rankers
from tests.test_diffusion import _permute_markdown
from tests.test_rankers import _common, _set, ws  # noqa: F401  (the tiny store fixture)


# --- pure parts ----------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_unmasking_schedule_places_every_cell_by_the_last_step(steps):
  n = jnp.array([0, 1, 2, 5, 37, 400])
  left = [np.asarray(gd.still_masked(n, k, steps)) for k in range(steps)]
  prev = np.asarray(n)
  for cur in left:
    assert (cur <= prev).all() and (cur >= 0).all()
    prev = cur
  np.testing.assert_array_equal(left[-1], 0)
  if steps >= 4:  # the cosine schedule places few cells first, many last
    assert left[0][-1] > 400 // 2 and left[-2][-1] < 400 // 2


def test_mask_ratio_schedules_and_config_validation():
  r = np.asarray(gd.mask_ratios(jax.random.key(0), (20_000,), "cosine"))
  assert 0 <= r.min() and r.max() <= 1 and r.mean() == pytest.approx(2 / np.pi, abs=0.01)
  r = np.asarray(gd.mask_ratios(jax.random.key(0), (20_000,), "uniform"))
  assert r.mean() == pytest.approx(0.5, abs=0.01)
  for bad in [{"objective": "flow"}, {"mask_schedule": "linear"}, {"sample_steps": 0},
              {"num_samples": 0}, {"decode": "pointwise"}, {"self_condition": 1.5},
              {"full_mask_prob": -0.1}]:
    with pytest.raises(ValueError, match=next(iter(bad))):
      gd.GapDiffusionConfig(**bad)


def test_placed_features_read_the_markdown_cells_placed_in_each_gap():
  # 2 code cells (rows 0, 1), markdown rows 2, 3, 4: row 3 placed in gap 1, row 4 in gap 2.
  C = 5
  sim = np.zeros((1, C, C), np.float32)
  sim[0, 2, 3] = sim[0, 3, 2] = 0.9
  sim[0, 2, 4] = sim[0, 4, 2] = 0.2
  placed_gap = jnp.array([[-1, -1, -1, 1, 2]])
  placed = placed_gap >= 0
  grid = pairs.gaps(jnp.array([2]), C)
  soft, prv, nxt, has, count, rel = [np.asarray(f)[0] for f in pairs.placed_features(
      jnp.asarray(sim), placed_gap, placed, grid)]
  np.testing.assert_allclose(soft[2, :3], [0, 0.9, 0.2], atol=1e-5)  # one cell each: its sim
  np.testing.assert_allclose(has[2, :4], [0, 1, 1, 0])
  np.testing.assert_allclose(prv[2, :4], [0, 0, 0.9, 0.2], atol=1e-5)
  np.testing.assert_allclose(nxt[2, :3], [0.9, 0.2, 0], atol=1e-5)
  np.testing.assert_allclose(rel[2, :3], [-1, 0, 0.2 - 0.9], atol=1e-5)
  np.testing.assert_allclose(count[2, :3], np.log1p([0, 1, 1]) / 3, atol=1e-6)
  assert soft[3, 1] == 0  # a placed cell is not evidence for itself
  # Two cells in one gap: a soft maximum, at least the larger similarity.
  two = pairs.placed_features(jnp.asarray(sim), jnp.array([[-1, -1, -1, 1, 1]]),
                              jnp.array([[False, False, False, True, True]]), grid)[0]
  assert 0.9 <= float(two[0, 2, 1]) <= 0.9 + np.log(2) / 10 + 1e-6


def test_estimate_features_read_the_previous_gap_distributions():
  # 2 code cells; markdown rows 2, 3, 4. Row 3 was estimated in gap 1 (p 0.8) or 2 (0.2),
  # row 4 surely in gap 2; row 2 has an estimate, padding row none.
  C = 5
  sim = np.zeros((1, C, C), np.float32)
  sim[0, 2, 3] = sim[0, 3, 2] = 0.9
  sim[0, 2, 4] = sim[0, 4, 2] = 0.2
  probs = np.zeros((1, C, C + 1), np.float32)
  probs[0, 2, :3] = [0.5, 0.25, 0.25]
  probs[0, 3, :3] = [0, 0.8, 0.2]
  probs[0, 4, 2] = 1.0
  has = jnp.array([[False, False, True, True, True]])
  own_logp, p, soft, prv, nxt, count, flag = [np.asarray(f)[0] for f in pairs.estimate_features(
      jnp.asarray(sim), jnp.asarray(probs), has)]
  f = lambda q: np.log(np.asarray(q) + 1e-3) / np.log(1e3) + 1  # noqa: E731
  np.testing.assert_allclose(p[2, :3], [0.5, 0.25, 0.25])
  np.testing.assert_allclose(own_logp[2, :3], f([0.5, 0.25, 0.25]), atol=1e-6)
  assert own_logp[3, 0] == pytest.approx(0, abs=1e-6)  # probability 0: the bottom of the scale
  # Row 2's neighbour evidence in gap 1 is row 3's similarity, down by its probability.
  np.testing.assert_allclose(soft[2, 1], f(np.exp(10 * (0.9 - 1)) * 0.8), atol=1e-5)
  assert soft[2, 0] == pytest.approx(0, abs=1e-6)
  assert prv[2, 2] == soft[2, 1] and nxt[2, 0] == soft[2, 1]
  np.testing.assert_allclose(count[2, :3], np.log1p([0, 0.8, 1.2]) / 3, atol=1e-6)
  np.testing.assert_allclose(flag[:, 0], [0, 0, 1, 1, 1])
  # Cells without an estimate give none, and are no evidence for others.
  none = [np.asarray(f)[0] for f in pairs.estimate_features(
      jnp.asarray(sim), jnp.asarray(probs), has.at[0, 3].set(False))]
  assert all(np.all(f[3] == 0) for f in none)
  np.testing.assert_allclose(none[2][2, 1], f(np.exp(10 * (0.2 - 1)) * 0), atol=1e-6)


class Oracle(nn.Module):
  """Cell 0 of each notebook's markdown knows its gap; every further markdown cell knows
  its gap only once the cell before it is placed (a heading and its text): until then its
  distribution is flat, so the one-shot answer for it is a guess."""

  n_gaps: int

  def __call__(self, batch, deterministic=True):
    return self.denoise(batch, jnp.full(batch["is_code"].shape, -1), deterministic)

  def denoise(self, batch, placed_gap, deterministic=True):
    truth = jax.nn.one_hot(batch["target_gap"], self.n_gaps) * 8.0
    md = batch["cell_mask"] & ~batch["is_code"]
    first = md & ~jnp.roll(md, 1, axis=1)
    known = first | jnp.roll(placed_gap >= 0, 1, axis=1)
    logits = jnp.where(known[..., None], truth, 0.0)
    return {"gap_logits": logits, "key": jnp.zeros(md.shape)}


def test_unmasking_lets_cells_read_their_placed_neighbours_where_one_shot_cannot():
  # 3 code cells, a chain of 3 markdown cells in gaps 3, 0, 2.
  batch = {"is_code": jnp.array([[True] * 3 + [False] * 3]), "cell_mask": jnp.ones((1, 6), bool),
           "target_gap": jnp.array([[-1, -1, -1, 3, 0, 2]]), "n_code": jnp.array([3])}
  model = Oracle(7)
  params = model.init(jax.random.key(0), batch).get("params", {})
  cfg = gd.GapDiffusionConfig()
  for steps, solved in [(1, False), (2, False), (3, True), (8, True)]:
    out = gd.predict(model, params, batch, jax.random.key(0),
                     dataclasses.replace(cfg, sample_steps=steps))
    got = np.asarray(out["gap_probs"])[0, 3:].argmax(-1)
    assert np.array_equal(got, [3, 0, 2]) == solved, (steps, got)
    assert np.asarray(out["gap_probs"])[0, 3:, 0].max() > 0  # every cell got a distribution


# --- the network on sample batches ---------------------------------------------------------
def tiny_config(ws, **overrides):  # noqa: F811
  c = _common(gap_diffusion_config.get_config(), ws)
  _set(c, {"features.encoder": "tiny", "model.hidden_dim": 32, "model.num_layers": 1,
           "model.num_heads": 2, "model.use_bilinear": True, "model.sample_steps": 4})
  return _set(c, overrides)


@pytest.fixture(scope="module")
def net(ws):  # noqa: F811
  cfg = tiny_config(ws)  # without self-conditioning (net_sc below has it)
  nbs = [nb for nb in train.load_notebooks(cfg.data) if 3 <= nb.n_markdown and nb.n_cells <= 60]
  nbs = nbs[:3]
  f, items = features.fit_any(cfg.features, nbs)
  fam = train.family_from_config(cfg, f.vocab_size)
  arrays = batching.collate(items, 64)
  model = fam.build()
  x = {k: jnp.asarray(v) for k, v in arrays.items() if not k.startswith("target_")}
  params = model.init({"params": jax.random.key(0)}, x)["params"]
  return fam, model, params, arrays


def _inputs(arrays):
  return {k: jnp.asarray(v) for k, v in arrays.items() if not k.startswith("target_")}


def test_placements_enter_the_cells_ranker_only_in_gap_diffusion(net, ws):  # noqa: F811
  fam, model, params, arrays = net
  cells = params["denoiser"]["cells"]
  assert "placed" in cells and "mask_ratio" in cells
  plain = rankers.CellsRanker(rankers.CellsConfig(**{
      f.name: getattr(fam.cfg, f.name) for f in dataclasses.fields(rankers.CellsConfig)}))
  plain_params = plain.init({"params": jax.random.key(0)}, _inputs(arrays))["params"]
  assert "placed" not in plain_params["cells"] and "mask_ratio" not in plain_params["cells"]
  # A placed neighbour changes the other cells' distributions.
  x = _inputs(arrays)
  none = jnp.full(x["is_code"].shape, -1)
  some = jnp.where(jnp.arange(none.shape[1])[None] == x["n_code"][:, None],
                   jnp.asarray(arrays["target_gap"]), -1)
  a = model.apply({"params": params}, x, none, True, method="denoise")["gap_logits"]
  b = model.apply({"params": params}, x, some, True, method="denoise")["gap_logits"]
  assert not np.allclose(np.asarray(a), np.asarray(b))


def test_one_step_is_the_one_shot_forward_and_sampling_is_deterministic(net):
  fam, model, params, arrays = net
  x = _inputs(arrays)
  md = np.asarray(x["cell_mask"] & ~x["is_code"])
  one = jax.jit(lambda p, b: model.apply({"params": p}, b, jnp.full(md.shape, -1), True,
                                         method="denoise"))(params, x)
  predict = jax.jit(gd.predict, static_argnums=(0, 4))
  out = predict(model, params, x, jax.random.key(3), dataclasses.replace(fam.cfg, sample_steps=1))
  np.testing.assert_allclose(np.asarray(out["gap_probs"])[md],
                             np.asarray(jax.nn.softmax(one["gap_logits"], -1))[md], atol=1e-6)
  twin = predict(model, params, x, jax.random.key(3),
                 dataclasses.replace(fam.cfg, objective="one_shot"))
  np.testing.assert_array_equal(np.asarray(twin["gap_probs"]), np.asarray(out["gap_probs"]))
  cfg = dataclasses.replace(fam.cfg, sample_steps=4, num_samples=3, temperature=2.0)
  fn = jax.jit(lambda p, b, r: gd.predict(model, p, b, r, cfg))
  a, b = fn(params, x, jax.random.key(5)), fn(params, x, jax.random.key(5))
  np.testing.assert_array_equal(np.asarray(a["gap_probs"]), np.asarray(b["gap_probs"]))
  np.testing.assert_allclose(np.asarray(a["gap_probs"]).sum(-1)[md], 1, atol=1e-5)
  c = fn(params, x, jax.random.key(6))
  assert not np.array_equal(np.asarray(a["gap_probs"]), np.asarray(c["gap_probs"]))


@pytest.mark.parametrize("which", ["net", "net_sc"])
def test_denoiser_and_sampler_are_equivariant_to_markdown_permutations(which, request):
  fam, model, params, arrays = request.getfixturevalue(which)
  perm_arrays, perms = _permute_markdown(arrays, np.random.default_rng(0))
  rows = np.arange(perms.shape[0])[:, None]
  x, px = _inputs(arrays), _inputs(perm_arrays)
  rng = np.random.default_rng(1)
  placed = np.where(rng.random(perms.shape) < 0.5, arrays["target_gap"], -1)
  est, p_est = (), ()
  if fam.cfg.self_condition > 0:  # and a previous estimate, permuted with the rows
    e = jax.nn.softmax(jnp.asarray(rng.normal(size=perms.shape + (perms.shape[1] + 1,))), -1)
    est, p_est = (e,), (e[rows, perms],)
  a = model.apply({"params": params}, x, jnp.asarray(placed), True, *est, method="denoise")
  b = model.apply({"params": params}, px, jnp.asarray(placed[rows, perms]), True, *p_est,
                  method="denoise")
  mask = arrays["cell_mask"]
  np.testing.assert_allclose(np.asarray(a["gap_logits"])[rows, perms][mask],
                             np.asarray(b["gap_logits"])[mask], atol=2e-4)
  sa = gd.predict(model, params, x, jax.random.key(0), fam.cfg)
  sb = gd.predict(model, params, px, jax.random.key(0), fam.cfg)
  np.testing.assert_allclose(np.asarray(sa["gap_probs"])[rows, perms][mask],
                             np.asarray(sb["gap_probs"])[mask], atol=2e-4)


def test_loss_is_over_the_masked_cells_with_gradients(net):
  fam, model, params, arrays = net
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  md = float((batch["cell_mask"] & ~batch["is_code"]).sum())

  def loss(p, cfg):
    out = model.clone(config=cfg).apply({"params": p}, batch, deterministic=False,
                                        rngs={"dropout": jax.random.key(2)})
    return gd.loss_fn(out, batch, cfg)

  (value, aux), grads = jax.jit(jax.value_and_grad(lambda p: loss(p, fam.cfg), has_aux=True))(
      params)
  assert np.isfinite(float(value))
  assert 0 < float(aux["placed_share"]) < 1
  assert float(aux["n_markdown"]) == pytest.approx(md * (1 - float(aux["placed_share"])))
  assert float(jnp.abs(grads["denoiser"]["cells"]["placed"]).sum()) > 0
  _, aux = jax.jit(lambda p: loss(p, dataclasses.replace(fam.cfg, objective="one_shot")))(params)
  assert float(aux["placed_share"]) == 0 and float(aux["n_markdown"]) == md


def test_gap_diffusion_trains_and_its_saved_run_predicts_what_it_validated(ws, tmp_path):  # noqa: F811
  # Exact resume is the shared loop's (tests/test_train.py, test_kill_resume.py); this checks
  # the family's wiring: registry, masked loss in the loop, its sampler in the Predictor.
  cfg = tiny_config(ws)
  out = train.train_and_evaluate(cfg, tmp_path / "a")
  assert out["status"] == "done" and out["step"] == 3
  lines = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  train_lines = [l["metrics"] for l in lines if l["split"] == "train"]
  assert all(np.isfinite(m["loss"]) and 0 <= m["placed_share"] < 1 for m in train_lines)
  predictor, config = train.load_predictor(tmp_path / "a")
  assert predictor.family.cfg.sample_steps == 4
  _, val = train.split_data(train.load_notebooks(config.data), config.data)
  table, _ = train.evaluate_predictions(val, predictor.predict(val))
  assert table["kendall_tau"] == pytest.approx(out["val"]["kendall_tau"], abs=1e-9)


# --- self-conditioning (model.self_condition > 0) --------------------------------------------
@pytest.fixture(scope="module")
def net_sc(ws):  # noqa: F811
  cfg = tiny_config(ws, **{"model.self_condition": 0.5})  # as gap_diffusion.flags
  nbs = [nb for nb in train.load_notebooks(cfg.data) if 3 <= nb.n_markdown and nb.n_cells <= 60]
  f, items = features.fit_any(cfg.features, nbs[:3])
  fam = train.family_from_config(cfg, f.vocab_size)
  arrays = batching.collate(items, 64)
  model = fam.build()
  params = model.init({"params": jax.random.key(0)}, _inputs(arrays))["params"]
  return fam, model, params, arrays


def test_self_conditioning_reads_the_previous_estimate_and_one_step_is_still_one_shot(net_sc):
  fam, model, params, arrays = net_sc
  assert fam.cfg.self_condition == 0.5 and "self_cond" in params["denoiser"]["cells"]
  x = _inputs(arrays)
  md = np.asarray(x["cell_mask"] & ~x["is_code"])
  none = jnp.full(md.shape, -1)
  denoise = jax.jit(lambda p, b, e: model.apply({"params": p}, b, none, True, e,
                                                method="denoise"))
  zero = gd.no_estimate(x)
  a = denoise(params, x, zero)
  truth = jax.nn.one_hot(jnp.asarray(arrays["target_gap"]), zero.shape[-1])
  b = denoise(params, x, truth)
  assert not np.allclose(np.asarray(a["gap_logits"])[md], np.asarray(b["gap_logits"])[md])
  # No estimate given is no estimate: the first step of sampling reads none.
  c = jax.jit(lambda p, b: model.apply({"params": p}, b, none, True, method="denoise"))(params, x)
  np.testing.assert_array_equal(np.asarray(a["gap_logits"]), np.asarray(c["gap_logits"]))
  predict = jax.jit(gd.predict, static_argnums=(0, 4))
  one = predict(model, params, x, jax.random.key(3), dataclasses.replace(fam.cfg, sample_steps=1))
  np.testing.assert_allclose(np.asarray(one["gap_probs"])[md],
                             np.asarray(jax.nn.softmax(a["gap_logits"], -1))[md], atol=1e-6)
  # Step 2 reads step 1's estimate: the cells it places differ from the same sampler's
  # without the estimate (the sampler's switch, same parameters); step 1's cells do not.
  two = predict(model, params, x, jax.random.key(3), dataclasses.replace(fam.cfg, sample_steps=2))
  off = predict(model, params, x, jax.random.key(3),
                dataclasses.replace(fam.cfg, sample_steps=2, self_condition=0.0))
  same = np.all(np.isclose(np.asarray(two["gap_probs"]), np.asarray(off["gap_probs"]),
                           atol=1e-6), -1) & md
  n_md = md.sum(-1)
  first = n_md - np.asarray(gd.still_masked(jnp.asarray(n_md), 0, 2))
  np.testing.assert_array_equal(same.sum(-1), first)
  assert (first < n_md).all()
  fn = jax.jit(lambda p, b, r: gd.predict(model, p, b, r, dataclasses.replace(
      fam.cfg, sample_steps=4, num_samples=2)))
  s1, s2 = fn(params, x, jax.random.key(5)), fn(params, x, jax.random.key(5))
  np.testing.assert_array_equal(np.asarray(s1["gap_probs"]), np.asarray(s2["gap_probs"]))
  np.testing.assert_allclose(np.asarray(two["gap_probs"]).sum(-1)[md], 1, atol=1e-5)


def test_self_conditioned_loss_trains_the_estimate_inputs(net_sc):
  fam, model, params, arrays = net_sc
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}

  def loss(p):
    out = model.apply({"params": p}, batch, deterministic=False,
                      rngs={"dropout": jax.random.key(2)})
    return gd.loss_fn(out, batch, fam.cfg)

  (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert np.isfinite(float(value)) and 0 < float(aux["placed_share"]) < 1
  cells = grads["denoiser"]["cells"]
  assert float(jnp.abs(cells["self_cond"]).sum()) > 0
  assert float(jnp.abs(cells["self_cond_conf"]["kernel"]).sum()) > 0


def test_unrolled_training_places_the_first_passs_most_confident_cells(net_sc):
  fam, model, params, arrays = net_sc
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  md = np.asarray(batch["cell_mask"] & ~batch["is_code"])
  unrolled = model.clone(config=dataclasses.replace(fam.cfg, unrolled=1.0, full_mask_prob=0.0))
  out = unrolled.apply({"params": params}, batch, deterministic=True)  # no dropout, same masks
  first = model.apply({"params": params}, _inputs(arrays), jnp.full(md.shape, -1), True,
                      method="denoise")
  conf = np.asarray(jax.nn.softmax(first["gap_logits"], -1).max(-1))
  placed = np.asarray(out["placed"])
  assert placed[md].any() and (~placed[md]).any() and not placed[~md].any()
  for b in range(md.shape[0]):
    on, off = conf[b][placed[b] & md[b]], conf[b][~placed[b] & md[b]]
    if len(on) and len(off):
      assert on.min() >= off.max()  # the most confident ones, however many the mask keeps
  # Read as the sampler's second step would: unlike the truth-placed training, the same
  # placements at their first-pass gaps give these outputs.
  gaps = np.where(placed, np.asarray(first["gap_logits"]).argmax(-1), -1)
  est = jax.nn.softmax(first["gap_logits"], -1)
  again = model.apply({"params": params}, _inputs(arrays), jnp.asarray(gaps), True, est,
                      method="denoise")
  np.testing.assert_allclose(np.asarray(out["gap_logits"])[md & ~placed],
                             np.asarray(again["gap_logits"])[md & ~placed], rtol=1e-4, atol=1e-4)
  truth = model.apply({"params": params}, _inputs(arrays),
                      jnp.asarray(np.where(placed, arrays["target_gap"], -1)), True, est,
                      method="denoise")
  assert not np.allclose(np.asarray(truth["gap_logits"])[md & ~placed],
                         np.asarray(again["gap_logits"])[md & ~placed], atol=1e-4)


def test_refine_sampler_rereads_every_cell_and_needs_self_conditioning(net_sc):
  fam, model, params, arrays = net_sc
  x = _inputs(arrays)
  md = np.asarray(x["cell_mask"] & ~x["is_code"])
  with pytest.raises(ValueError, match="refine"):
    dataclasses.replace(fam.cfg, sampler="refine", self_condition=0.0)
  refine = dataclasses.replace(fam.cfg, sampler="refine", sample_steps=2)
  out = gd.predict(model, params, x, jax.random.key(0), refine)
  none = jnp.full(md.shape, -1)
  first = model.apply({"params": params}, x, none, True, method="denoise")
  second = model.apply({"params": params}, x, none, True,
                       jax.nn.softmax(first["gap_logits"], -1), method="denoise")
  np.testing.assert_allclose(np.asarray(out["gap_probs"])[md],
                             np.asarray(jax.nn.softmax(second["gap_logits"], -1))[md], atol=1e-6)


def test_bench_diffusion_summarizes_folds_as_mean_and_std(tmp_path):
  from benchmarks import common
  paths = []
  for i, (one_shot, k4) in enumerate([(0.80, 0.81), (0.84, 0.83)]):
    rows = [dict(model="gap_diffusion_one_shot", K="-", S="-", t_start="-", avg="-",
                 tau=one_shot),
            dict(model="gap_diffusion", K=4, S=1, t_start="-", avg="-", tau=k4),
            dict(model="gap_diffusion", K=8, S=4, t_start="-", avg="-", tau=None)]
    if i == 0:
      rows.append(dict(model="gap_diffusion", K=1, S=1, t_start="-", avg="-", tau=0.5))
    paths.append(tmp_path / f"f{i}.json")
    paths[-1].write_text(json.dumps({"rows": rows, "fold": 0, "val_sources": f"repo/{i}",
                                     "n_val_used": 10}))
  text = common.summarize_folds([str(p) for p in paths])
  assert "2 folds: repo/0 (10 notebooks), repo/1 (10 notebooks)" in text
  lines = {tuple(l.split()[:3]): l.split()[5:] for l in text.splitlines()[2:]}
  assert lines[("gap_diffusion_one_shot", "-", "-")] == ["0.8200", "0.0200", "0.8000", "0.8400"]
  assert lines[("gap_diffusion", "4", "1")] == ["0.8200", "0.0100", "0.8100", "0.8300"]
  assert len(lines) == 2  # K=1 is in one fold only, K=8 S=4 was skipped: neither is averaged
