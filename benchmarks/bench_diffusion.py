r"""Diffusion ranker vs pointwise rankers on the same cell vectors, and its sampling sweep.

One run trains, with the real trainer (`train.train_and_evaluate`, so Orbax
checkpoints and resume: rerunning continues), on the ancestor-held-out split
(`--fold` of `--n_folds`):

  * diffusion           flow-matching diffusion ranker (jaxrank/models/diffusion.py);
  * diffusion_pointwise the *same* network (same cell vectors, same transformer
                        over cells, same gap head, same steps), objective="pointwise":
                        one shot from no position information, same targets;
  * roberta_cells       (--features=encoder, the default) the cell-level ranker of
                        jaxrank/models/rankers.py on the same frozen vectors;
  * bow_mlp_pointwise   (--features=bow) the BOW-MLP with model.decode=pointwise;
  * gap_diffusion       (--features=encoder) the cells ranker made iterative: a discrete
                        diffusion over each markdown cell's gap, unmasked K steps most
                        confident first, S orders (jaxrank/models/gap_diffusion.py);
  * gap_diffusion_one_shot  the same network trained at mask ratio 1 only (its twin);
  * tfidf_ridge         the classic baseline (as in benchmarks/baselines.py: TF-IDF of
                        each markdown cell's text, Ridge on its true key), on the same
                        validation notebooks, for reference.

Then prints the pooled Kendall tau of each on validation notebooks
(`--max_val_notebooks` sampled with a fixed seed; 0 = the whole fold) and, for
diffusion, tau for sampling steps K x samples per notebook S (the grid
--sample_steps x --num_samples plus --extra points), each with the
model time per notebook (featurisation excluded, compilation excluded: every
bucket shape is compiled on a warm-up batch first). Combinations with
K * S > --max_evals are skipped (said so in the table). Rows are logged and
written to WORKDIR/bench_diffusion_partial.json as they come; runs already
trained to --steps are not retrained (rerun to resume or re-score).

  .venv/bin/python -m benchmarks.bench_diffusion --fold=0 --max_val_notebooks=150 \
      --steps=240 --workdir=/tmp/bench_diffusion [--features=bow] \
      [--overrides=model.self_condition=True]

Fold 0 of nbcorpus is one huge repository (kaggleScape, 1076 notebooks); its
full validation is slow with many sampling steps, hence --max_val_notebooks.
The trainer's own final validation (whole fold, diffusion at its run's K and S:
16 and 1 when this script trains it) is printed too.

Measured (`python -m benchmarks.bench_diffusion`, fold 0 of nbcorpus: trained on
989 notebooks, 240 steps each, frozen MiniLM vectors; tau on 150 validation
notebooks of the unseen repository, ms per notebook on 2 CPU cores):

  model                     K   S    tau    ms/nb
  TF-IDF + ridge            -   -   0.565    13
  same net, one-shot        -   -   0.720     6
  roberta_cells             -   -   0.714     4
  diffusion                 1   1   0.693    10
  diffusion                 1   4   0.710    27
  diffusion                 4   1   0.680    34
  diffusion                 4   4   0.705    91
  diffusion                16   1   0.689   120
  diffusion                16   4   0.707   342
  diffusion                64   1   0.701   495
  diffusion                64   4   0.709  1358
  diffusion                 4  16   0.710   439
  diffusion                16  16   0.710  1707

  (whole fold, 1,076 notebooks: one-shot 0.737, diffusion K=16 S=1 0.706;
  all with median decoding. With decode.crowded_gaps (the default,
  `crowding=2.0`) the one-shot scores 0.741, and 0.752 on a MiniLM
  pair-fine-tuned on the training fold, jaxrank/pair_finetune.py.)

Samples matter more than steps: averaging the gap probabilities of S
samples estimates the per-cell posterior marginals, which is what the
decoder wants; one sample is one draw of a joint order, noisier than the
marginal. The one-shot network estimates those marginals directly, and
diffusion approaches it from below as S grows (-0.010 at S = 16) without
passing it: nothing in the metric rewards the joint consistency of a sample.
Self-conditioning (on by default) gave +0.006 to +0.016.

On the combined corpora, Surfing-Ninja Kaggle-kernel fold (`--data_dir=
../shared/data/nbcorpus,../shared/data/nbcorpus2 --val_sources=Surfing-Ninja/
Kaggle_NB_EXTRACTOR --encoder=minilm-pairs-xsn`, runs trained separately for 2
epochs = 282 steps and given with --runs; 150 of the 1,060 validation
notebooks; 2 CPU cores under load 8-16 from other jobs, so ms/nb are only
comparable within a column of one call; t0 = model.sample_t_start):

  model                     K   S   t0    tau    ms/nb
  TF-IDF + ridge            -   -    -   0.688
  cells ranker (k2-s0)      -   -    -   0.810     31
  same net, one-shot        -   -    -   0.787     37
  diffusion                 1   1    0   0.766     39
  diffusion                 1   4    0   0.780    201
  diffusion                 4   1    0   0.756    104
  diffusion                 4   4    0   0.776    413
  diffusion                 8   1    0   0.759    330
  diffusion                 8   4    0   0.776   1782
  diffusion                 1   1   .5   0.759     75
  diffusion                 1   4   .5   0.778    239
  diffusion                 4   1   .5   0.760    149
  diffusion                 4   4   .5   0.777    828
  diffusion                 8   1   .5   0.765    618
  diffusion                 8   4   .5   0.778    987
  diffusion                 4   4   .5   0.777    441  gap probs of the last 4 steps averaged
  diffusion                 4   4   .8   0.779    658  gap probs of the last 4 steps averaged
  (whole fold, 1,060 notebooks: cells ranker 0.7872, one-shot 0.7739,
  diffusion K=1 S=1 0.7523, K=1 S=4 0.7630.)

The SDEdit-style start (one-shot estimate at t = 0, re-noised to t_start,
K steps over [t_start, 1]) moves tau by -0.007 to +0.006 against starting
from pure noise: within the noise of 150 notebooks. Steps still do not pay
(K = 4 and 8 at or below K = 1, also with the gap probabilities of the last
steps averaged); samples do (+0.013 to +0.021 from S = 1 to
4). The same network trained one-shot stays ahead of every sampler (+0.008),
and the flow-trained network's own t = 0 estimate is weaker than the twin's
(0.766 vs 0.787): it is trained at t near 0 rarely (logit-normal times), so
what the refinement starts from is already behind. `model.t0_prob` (train a
share of notebooks at t = 0) targets that; it is built and tested but was
not trained here for lack of machine time.

Gap diffusion, three Kaggle-kernel folds of the combined corpora, whole folds (runs
trained with experiments/recipes/best.sh's member flags on its Surfing-Ninja-held-out
encoder, seed 0, and given with --runs; one call per fold with --sample_steps=1,4,8
--num_samples=1 --extra=4x4, then --summarize over the three bench_diffusion.json):

  model                    K   S  tau mean  +- std  SN      kaggleScape  simisimon
  tfidf_ridge              -   -   0.6822  0.0479  0.6720  0.6293  0.7453
  roberta_cells            -   -   0.8394  0.0200  0.8387  0.8152  0.8643
  gap_diffusion_one_shot   -   -   0.8398  0.0201  0.8393  0.8155  0.8647
  gap_diffusion            1   1   0.8387  0.0201  0.8357  0.8158  0.8646
  gap_diffusion            4   1   0.8389  0.0201  0.8360  0.8158  0.8649
  gap_diffusion            8   1   0.8393  0.0211  0.8357  0.8155  0.8667
  gap_diffusion            4   4   0.8391  0.0198  0.8363  0.8163  0.8646

Level with the cells ranker, but K >= 4 gains only +0.0002 to +0.0006 over K = 1,
and the one-shot twin stays ahead: the other markdown cells' places say little
about a cell's gap (README, "On the combined corpora", has the evidence).

With self-conditioning (the same runs' flags plus model.self_condition=0.5
model.full_mask_prob=0.5 model.placed_in_gap_keys=True; --sample_steps=1,2,4,8
--num_samples=1 --extra=), the steps pay on every fold:

  model                    K   S  tau mean  +- std  SN      kaggleScape  simisimon
  gap_diffusion            1   1   0.8378  0.0211  0.8352  0.8134  0.8649
  gap_diffusion            2   1   0.8423  0.0194  0.8394  0.8202  0.8674
  gap_diffusion            4   1   0.8423  0.0189  0.8392  0.8209  0.8669
  gap_diffusion            8   1   0.8416  0.0190  0.8372  0.8209  0.8668

K = 4 against the one-shot twin above: -0.0001, +0.0054, +0.0022 (mean +0.0025);
against K = 1: +0.0040, +0.0075, +0.0020. Seed 1 (train.seed=1; K = 4 from the
trainer's validation, K = 1 and 2 re-scored; the twin retrained at seed 1):

  model                    K   S  tau mean  +- std  SN      kaggleScape  simisimon
  gap_diffusion_one_shot   -   -   0.8412  0.0209  0.8414  0.8156  0.8667
  gap_diffusion            1   1   0.8385  0.0195  0.8368  0.8154  0.8632
  gap_diffusion            2   1   0.8420  0.0184  0.8398  0.8206  0.8655
  gap_diffusion            4   1   0.8422  0.0180  0.8383  0.8223  0.8659

K = 4 beats K = 1 on all six fold-seeds (mean +0.0041) and the twin on the mean of
each seed (+0.0025, +0.0010), kaggleScape carrying it (+0.0054, +0.0067; Surfing-Ninja
-0.0001, -0.0031; simisimon +0.0022, -0.0008).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Sequence

from absl import app, flags, logging
import numpy as np

from benchmarks import common

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/nbcorpus", "Competition-format "
                                "folder, or several: A,B.")
_VAL_SOURCES = flags.DEFINE_string("val_sources", "", "Validate on these repositories (as in "
                                   "sources.csv) instead of --fold, e.g. adgirish/kaggleScape.")
_FOLD = flags.DEFINE_integer("fold", 0, "Validation fold (ancestor-grouped).")
_N_FOLDS = flags.DEFINE_integer("n_folds", 5, "Number of folds.")
_STEPS = flags.DEFINE_integer("steps", 240, "Training steps of each model.")
_MAX_VAL = flags.DEFINE_integer("max_val_notebooks", 150, "Validation notebooks for the table "
                                "(random, fixed seed); 0 = the whole fold.")
_K = flags.DEFINE_list("sample_steps", ["1", "4", "16", "64"], "Sampling steps K to sweep.")
_S = flags.DEFINE_list("num_samples", ["1", "4"], "Samples per notebook S to sweep.")
_EXTRA = flags.DEFINE_list("extra", ["16x16"], "More KxS points, e.g. 16x16.")
_T_START = flags.DEFINE_list("t_start", ["0"], "SDEdit start times to sweep with every KxS "
                             "point (model.sample_t_start; 0 = from pure noise).")
_PROB_AVG = flags.DEFINE_list("prob_avg", ["1"], "Last steps whose gap probabilities are "
                              "averaged (model.prob_avg_steps) to sweep with every point.")
_MODELS = flags.DEFINE_list("models", ["diffusion", "diffusion_pointwise", "roberta_cells",
                                       "bow_mlp_pointwise", "gap_diffusion",
                                       "gap_diffusion_one_shot"],
                            "Models to train/score (those that --features allows).")
_CELLS_OVERRIDES = flags.DEFINE_list("cells_overrides", [], "Config overrides of roberta_cells "
                                     "and both gap-diffusion nets, e.g. "
                                     "model.use_bilinear=True,features.cell_shape=True.")
_GAP_TEMPERATURE = flags.DEFINE_float("gap_temperature", 1.0, "Gumbel noise on the unmasking "
                                      "order of gap diffusion (model.temperature) when S > 1.")
_SUMMARIZE = flags.DEFINE_list("summarize", [], "Instead of running: the bench_diffusion.json "
                               "of several folds (one call each), printed as mean +- std over "
                               "folds per model and sampling point.")
_RUNS = flags.DEFINE_list("runs", [], "Already trained runs to score instead of training, "
                          "NAME=RUN_DIR (e.g. roberta_cells=ws/runs/k2-s0); their own config "
                          "must use the same data, which is checked.")
_MEDIAN = flags.DEFINE_string("median", "", "KxS point also scored with the median of "
                              "samples instead of the mean ('' = none; the gap head decodes "
                              "sample-averaged gap probabilities, so this only moves ties).")
_MAX_EVALS = flags.DEFINE_integer("max_evals", 256, "Skip sweep points with K * S above this.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_diffusion", "Runs and results go here.")
_HIDDEN = flags.DEFINE_integer("hidden_dim", 128, "Transformer width of the diffusion nets.")
_LAYERS = flags.DEFINE_integer("tf_layers", 2, "Transformer blocks of the diffusion nets.")
_FEATURES = flags.DEFINE_enum("features", "encoder", ["encoder", "bow"],
                              "Cell vectors of every model: cached frozen store-encoder vectors "
                              "(+ their cosine and the per-notebook word TF-IDF cosine), or "
                              "TF-IDF bags.")
_OVERRIDES = flags.DEFINE_list("overrides", [], "Config overrides of both diffusion nets, "
                               "e.g. model.self_condition=True,model.time_sampling=uniform.")
_WORKSPACE = flags.DEFINE_string("workspace", "workspace", "Workspace holding models/ (encoder).")
_ENCODER = flags.DEFINE_string("encoder", "minilm-l6", "Store encoder for --features=encoder.")


def _set(c, **dotted):
  c.update_from_flattened_dict(dotted)
  return c


def _common(c, workdir: Path):
  data_dir = ",".join(str(Path(d).absolute()) for d in _DATA_DIR.value.split(","))
  c = _set(c, **{"data.data_dir": data_dir, "data.val_sources": _VAL_SOURCES.value,
                 "data.cache_dir": str(workdir / "cache"), "data.fold": _FOLD.value,
                 "data.n_folds": _N_FOLDS.value, "train.steps": _STEPS.value,
                 "train.eval_every": 10 ** 9, "train.checkpoint_every": 100,
                 "train.log_every": 50, "optim.warmup_steps": min(50, _STEPS.value // 10)})
  if c.features.kind == "encoder":
    c = _set(c, **{"features.workspace": str(Path(_WORKSPACE.value).absolute()),
                   "features.encoder": _ENCODER.value})
  return c


def _configs(workdir: Path) -> dict:
  from experiments.configs import bow_mlp, diffusion, gap_diffusion, roberta_cells
  net = {"model.hidden_dim": _HIDDEN.value, "model.tf_layers": _LAYERS.value,
         "model.sample_steps": 16, "model.num_samples": 1}
  kind = _FEATURES.value
  net.update(common.overrides(_OVERRIDES.value))
  out = {
      "diffusion": _set(_common(diffusion.get_config(kind), workdir), **net),
      "diffusion_pointwise": _set(_common(diffusion.get_config(kind), workdir),
                                  **net, **{"model.objective": "pointwise"}),
  }
  if kind == "encoder":  # the cell-level ranker on the same frozen vectors, and made iterative
    cells = common.overrides(_CELLS_OVERRIDES.value)
    out["roberta_cells"] = _set(_common(roberta_cells.get_config(), workdir), **cells)
    out["gap_diffusion"] = _set(_common(gap_diffusion.get_config(), workdir), **cells)
    out["gap_diffusion_one_shot"] = _set(_common(gap_diffusion.get_config(), workdir), **cells,
                                         **{"model.objective": "one_shot"})
  else:
    out["bow_mlp_pointwise"] = _set(_common(bow_mlp.get_config(), workdir),
                                    **{"model.decode": "pointwise"})
  return {k: v for k, v in out.items() if k in _MODELS.value}


def _check_same_data(name: str, run_data, cfg_data) -> None:
  """A given run must have been trained on the split this table validates on."""
  for key in ("data_dir", "val_sources", "fold", "n_folds", "val_ancestors", "seed"):
    if str(run_data[key]) != str(cfg_data[key]):
      raise SystemExit(f"--runs {name}: its data.{key} is {run_data[key]!r}, this benchmark's "
                       f"is {cfg_data[key]!r}; pass matching --data_dir/--val_sources/--fold")


def _warm_and_time(predictor, val, items, cfg=None) -> tuple[float, float, dict]:
  """(tau, seconds per notebook, preds); compiles each bucket shape first."""
  from jaxrank import train
  from jaxrank.data import batching
  seen: dict[int, int] = {}
  for i, it in enumerate(items):
    seen.setdefault(batching.bucket_size(len(it["cell_mask"]), predictor.data_cfg.buckets), i)
  warm = sorted(seen.values())
  predictor.predict_items([val[i] for i in warm], [items[i] for i in warm], cfg)
  t0 = time.perf_counter()
  preds = predictor.predict_items(val, items, cfg)
  dt = (time.perf_counter() - t0) / len(val)
  table, _ = train.evaluate_predictions(val, preds)
  return table["kendall_tau"], dt, preds


def _tfidf_ridge(train_nbs, val) -> dict[str, list[str]]:
  """benchmarks/baselines.py's tfidf_ridge (not imported: that module defines the same flags)."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import Ridge
  from jaxrank import decode
  from jaxrank.data import targets

  texts, keys = [], []
  for nb in train_nbs:
    k = dict(zip(nb.cell_ids, targets.true_keys(nb)))
    src = dict(zip(nb.cell_ids, nb.sources))
    texts += [src[c] for c in nb.markdown_ids]
    keys += [k[c] for c in nb.markdown_ids]
  vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True,
                        dtype=np.float32)
  model = Ridge(alpha=1.0).fit(vec.fit_transform(texts), keys)
  preds = {}
  for nb in val:
    src = dict(zip(nb.cell_ids, nb.sources))
    md = [src[c] for c in nb.markdown_ids]
    keys_m = model.predict(vec.transform(md)) if md else np.zeros(0)
    preds[nb.id] = decode.order_from_keys(nb, keys_m)
  return preds


SWEPT = ("diffusion", "gap_diffusion")  # models scored at every sampling point


def _sampling_grid() -> list[tuple[int, int]]:
  """The (K, S) points to score: --sample_steps x --num_samples, then --extra."""
  grid = [(int(k), int(s)) for k in _K.value for s in _S.value]
  return grid + [tuple(map(int, ks.split("x"))) for ks in _EXTRA.value if ks]


def main(argv: Sequence[str]) -> None:
  del argv
  from jaxrank import features, io_utils, train

  if _SUMMARIZE.value:
    print(common.summarize_folds(_SUMMARIZE.value))
    return

  workdir = Path(_WORKDIR.value).absolute()
  configs = _configs(workdir)
  rows: list[dict] = []
  full_fold: dict[str, float] = {}
  predictors = {}
  given = dict(item.split("=", 1) for item in _RUNS.value)
  for name, cfg in configs.items():
    t0 = time.time()
    run_dir = Path(given[name]).absolute() if name in given else workdir / name
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    if name in given or (run.get("status") == "done" and run.get("steps") == _STEPS.value):
      # Trained by an earlier call: skip the trainer's re-featurising and re-validating.
      val_json = run_dir / "eval" / "val.json"
      full_fold[name] = (json.loads(val_json.read_text())["metrics"]["kendall_tau"]
                         if val_json.exists() else float("nan"))
    else:
      out = train.train_and_evaluate(cfg, run_dir)
      run = json.loads((run_dir / "run.json").read_text())
      full_fold[name] = out.get("val", {}).get("kendall_tau", float("nan"))
    logging.info("%s: %d steps, %.0fs in this call; full-fold val tau %.4f", name,
                 run.get("steps", -1), time.time() - t0, full_fold[name])
    predictors[name] = (train.load_predictor(run_dir, best=False)[0], run)
    if name in given:
      _check_same_data(name, predictors[name][0].data_cfg, cfg.data)

  cfg0 = next(iter(configs.values()))
  nbs = train.load_notebooks(cfg0.data)
  train_nbs, val_nbs = train.split_data(nbs, cfg0.data)
  if _MAX_VAL.value and len(val_nbs) > _MAX_VAL.value:
    pick = np.sort(np.random.default_rng(0).choice(len(val_nbs), _MAX_VAL.value, replace=False))
    val = [val_nbs[i] for i in pick]
  else:
    val = list(val_nbs)
  n_cells = sum(nb.n_cells for nb in val)
  logging.info("fold %d: %d train notebooks, %d val notebooks (%d used, %d cells)", _FOLD.value,
               len(train_nbs), len(val_nbs), len(val), n_cells)

  def add(row):
    rows.append(row)
    logging.info("row: %s", json.dumps(row))
    io_utils.atomic_write_json(workdir / "bench_diffusion_partial.json", rows)

  t0 = time.perf_counter()
  preds = _tfidf_ridge(train_nbs, val)
  table, _ = train.evaluate_predictions(val, preds)
  add(dict(model="tfidf_ridge", K="-", S="-", t_start="-", avg="-", tau=table["kendall_tau"],
           ms_per_nb=1e3 * (time.perf_counter() - t0) / len(val), note="fit+predict"))
  order = sorted(predictors, key=lambda n: n in SWEPT)  # the long sweeps last
  for name in order:
    predictor, run = predictors[name]
    items = features.items_any(predictor.features_kind, predictor.featurizer, val)
    base_cfg = predictor.family.cfg

    def score(point: dict, evals: int, **changes) -> None:
      """One sampling point of this model, skipped past --max_evals network calls."""
      if evals > _MAX_EVALS.value:
        add(dict(point, tau=None, ms_per_nb=None, note=f"skipped: evals > {_MAX_EVALS.value}"))
        return
      cfg = dataclasses.replace(base_cfg, **changes)
      tau, dt, _ = _warm_and_time(predictor, val, items, cfg)
      add(dict(point, tau=tau, ms_per_nb=1e3 * dt, train_s=run.get("wall_s"), note=""))

    if name == "gap_diffusion":  # K unmasking steps x S orders; no t_start / averaging
      for k, s in _sampling_grid():
        score(dict(model=name, K=k, S=s, t_start="-", avg="-"), k * s, sample_steps=k,
              num_samples=s, temperature=_GAP_TEMPERATURE.value)
      continue
    if name != "diffusion":
      tau, dt, _ = _warm_and_time(predictor, val, items)
      add(dict(model=name, K="-", S="-", t_start="-", avg="-", tau=tau, ms_per_nb=1e3 * dt,
               train_s=run.get("wall_s"), note=""))
      continue
    for (k, s), ts, avg in itertools.product(_sampling_grid(), map(float, _T_START.value),
                                             map(int, _PROB_AVG.value)):
      if avg > k:  # the same as avg = k
        continue
      score(dict(model=name, K=k, S=s, t_start=ts, avg=avg),
            (k + (ts > 0)) * s,  # t_start > 0: one more network call
            sample_steps=k, num_samples=s, sample_t_start=ts, prob_avg_steps=avg)
    if _MEDIAN.value:
      k, s = map(int, _MEDIAN.value.split("x"))
      cfg = dataclasses.replace(base_cfg, sample_steps=k, num_samples=s, combine="median")
      tau, dt, _ = _warm_and_time(predictor, val, items, cfg)
      add(dict(model=name, K=k, S=s, t_start=0.0, avg=1, tau=tau, ms_per_nb=1e3 * dt,
               train_s=run.get("wall_s"), note="median of samples"))

  trained = [n for n in configs if n not in given]
  where = _VAL_SOURCES.value or f"fold {_FOLD.value}/{_N_FOLDS.value}"
  lines = [f"{where}: {len(val)} of {len(val_nbs)} validation notebooks ({n_cells} cells), "
           f"{len(train_nbs)} train notebooks; "
           + (f"{_STEPS.value} training steps each for {', '.join(trained)}" if trained else "")
           + ("; " if trained and given else "")
           + (f"given runs (as their configs say): {', '.join(given)}" if given else ""),
           f"{'model':<22} {'K':>3} {'S':>3} {'t0':>5} {'avg':>3} {'tau':>7} {'ms/nb':>8}  note"]
  for r in rows:
    tau = "-" if r["tau"] is None else f"{r['tau']:.4f}"
    ms = "-" if r["ms_per_nb"] is None else f"{r['ms_per_nb']:.1f}"
    lines.append(f"{r['model']:<22} {r['K']!s:>3} {r['S']!s:>3} {r['t_start']!s:>5} "
                 f"{r['avg']!s:>3} {tau:>7} {ms:>8}  {r['note']}")
  lines.append("whole-fold val tau from the trainer (diffusion at its run's K, S): " + ", ".join(
      f"{k} {v:.4f}" for k, v in full_fold.items()))
  text = "\n".join(lines)
  print(text)
  io_utils.atomic_write_json(workdir / "bench_diffusion.json",
                             {"rows": rows, "full_fold_tau": full_fold, "fold": _FOLD.value,
                              "val_sources": _VAL_SOURCES.value,
                              "n_val_used": len(val), "n_val": len(val_nbs),
                              "steps": _STEPS.value, "table": text})


if __name__ == "__main__":
  app.run(main)
