"""Classic baselines on an ancestor-held-out validation fold, as a table of metrics.

Each ranker is a function `(train_nbs, val_nbs) -> {notebook id: order}`; every
row is scored by `jaxrank.submission.score_submission` (validated, then
`metrics.evaluate_orders`). Rows:
  * order_as_given: the file order (code cells in order, then shuffled markdown);
  * markdown_first: all markdown cells (file order), then the code cells;
  * xgb_ranker: the competition's getting-started recipe: TF-IDF of every cell's
    text + the code cell's index, XGBRanker (rank:pairwise) on the cell's rank,
    notebooks as groups; decoded so code cells keep their order;
  * tfidf_ridge: TF-IDF (word 1-2 grams) of each markdown cell's own text, Ridge
    regression of its true key (relative position, see jaxrank.data.targets);
    code cells at their known keys;
  * tfidf_nearest_code / lexical_nearest_code: each markdown cell just before
    its most similar code cell (fitted TF-IDF; per-notebook word TF-IDF);
  * bow_mlp: our BOW-MLP, trained on the fold (--nobow_mlp to skip);
  * with --encoder=NAME (a store model, e.g. minilm-l6): DESIGN.md's
    frozen-encoder nearest-code heuristic (alone and + lexical), and our
    RoBERTa cells ranker on the same frozen vectors, trained on the fold.

  python -m benchmarks.baselines --data_dir=../shared/data/nbcorpus --fold=0
  python -m benchmarks.baselines --data_dir=../shared/data/nbcorpus --fold=0 \
      --encoder=minilm-l6 --workspace=workspace
  python -m benchmarks.baselines --data_dir=... --out=workspace/baselines_fold0.json

To add a row from elsewhere (e.g. a trained model):
  train, val = load_fold(data_dir, fold=0)
  rows = run_rankers({**BASELINES, "bow_mlp": my_ranker}, train, val)
  print(format_table(rows))
"""

from __future__ import annotations

from pathlib import Path
import time
from typing import Callable, Mapping, Sequence

from absl import app
from absl import flags
import numpy as np
from scipy import sparse

from benchmarks import common
from jaxrank import decode
from jaxrank import io_utils
from jaxrank import submission
from jaxrank.data import folds
from jaxrank.data import notebooks as nb_io
from jaxrank.data import targets
from jaxrank.data.types import CODE, MARKDOWN, Notebook

Orders = dict[str, list[str]]
Ranker = Callable[[Sequence[Notebook], Sequence[Notebook]], Orders]


# ----------------------------------------------------------------- trivial rows
def order_as_given(train: Sequence[Notebook], val: Sequence[Notebook]) -> Orders:
  """The file order: code cells in their order, then markdown as shuffled."""
  del train
  return {nb.id: list(nb.cell_ids) for nb in val}


def markdown_first(train: Sequence[Notebook], val: Sequence[Notebook]) -> Orders:
  """All markdown cells (file order), then all code cells."""
  del train
  return {nb.id: list(nb.markdown_ids + nb.code_ids) for nb in val}


# --------------------------------------------------- (a) getting-started XGBRanker
def _cell_frame(nbs: Sequence[Notebook]):
  """Flat per-cell arrays in file order: texts, code index feature, group sizes."""
  texts, code_index, groups = [], [], []
  for nb in nbs:
    texts.extend(nb.sources)
    k = 0
    for t in nb.cell_types:
      # As the starter: code cells get their 1-based index among code cells, markdown 0.
      if t == CODE:
        k += 1
        code_index.append(k)
      else:
        code_index.append(0)
    groups.append(nb.n_cells)
  return texts, np.array(code_index, np.float32)[:, None], np.array(groups)


def xgb_ranker(train: Sequence[Notebook], val: Sequence[Notebook], *, seed: int = 0,
               n_jobs: int = 2) -> Orders:
  """The competition's getting-started recipe (TF-IDF + code index, XGBRanker)."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  import xgboost as xgb

  tr_texts, tr_code, tr_groups = _cell_frame(train)
  va_texts, va_code, _ = _cell_frame(val)
  tfidf = TfidfVectorizer(min_df=0.01, dtype=np.float32)
  x_tr = sparse.hstack([tfidf.fit_transform(tr_texts), tr_code], format="csr")
  x_va = sparse.hstack([tfidf.transform(va_texts), va_code], format="csr")
  # Label: each cell's rank in the true order (relevance grows with position).
  y_tr = np.concatenate([_true_ranks(nb) for nb in train]).astype(np.float32)
  # The starter ran on xgboost 1.x, whose rank:pairwise drew one random pair per
  # cell among cells of other labels; xgboost >= 2 defaults to "topk" pairs, which
  # here scores 0.43 instead of 0.46 on fold 0. "mean" with 1 pair restores 1.x.
  model = xgb.XGBRanker(objective="rank:pairwise", min_child_weight=10, subsample=0.5,
                        tree_method="hist", lambdarank_pair_method="mean",
                        lambdarank_num_pair_per_sample=1, random_state=seed, n_jobs=n_jobs)
  model.fit(x_tr, y_tr, group=tr_groups)
  scores = model.predict(x_va)
  preds, start = {}, 0
  for nb in val:
    s = scores[start:start + nb.n_cells]
    start += nb.n_cells
    is_code = np.array([t == CODE for t in nb.cell_types])
    # Sort all cells by score, then put code cells back in their known order.
    md_keys = decode.keys_from_scores(s[is_code], s[~is_code])
    preds[nb.id] = decode.order_from_keys(nb, md_keys)
  return preds


def _true_ranks(nb: Notebook) -> np.ndarray:
  rank = {c: i for i, c in enumerate(nb.order)}
  return np.array([rank[c] for c in nb.cell_ids])


# ------------------------------------------------------- (b) TF-IDF + Ridge
def _markdown(nbs: Sequence[Notebook]) -> tuple[list[str], list[int]]:
  texts, counts = [], []
  for nb in nbs:
    md = [s for s, t in zip(nb.sources, nb.cell_types) if t == MARKDOWN]
    texts.extend(md)
    counts.append(len(md))
  return texts, counts


def tfidf_ridge(train: Sequence[Notebook], val: Sequence[Notebook], *,
                alpha: float = 1.0) -> Orders:
  """Ridge on TF-IDF (word 1-2 grams) of markdown text -> the cell's true key."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import Ridge

  tr_texts, _ = _markdown(train)
  va_texts, va_counts = _markdown(val)
  y_tr = np.concatenate([targets.true_keys(nb)[targets.markdown_positions(nb)] for nb in train])
  tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000,
                          sublinear_tf=True, dtype=np.float32)
  model = Ridge(alpha=alpha)
  model.fit(tfidf.fit_transform(tr_texts), y_tr)
  pred_keys = model.predict(tfidf.transform(va_texts)) if va_texts else np.zeros(0)
  preds, start = {}, 0
  for nb, m in zip(val, va_counts):
    preds[nb.id] = decode.order_from_keys(nb, pred_keys[start:start + m])
    start += m
  return preds


def tfidf_nearest_code(train: Sequence[Notebook], val: Sequence[Notebook]) -> dict[str, list[str]]:
  """Each markdown cell just before the code cell of highest TF-IDF cosine.

  The TF-IDF twin of DESIGN.md's frozen-MiniLM heuristic; uses the BOW-MLP's
  featurizer (fitted on train) and its cell-cell similarity feature.
  """
  from experiments.configs import bow_mlp as bow_config
  from jaxrank.features import bow as features_bow
  featurizer = features_bow.fit(bow_config.get_config().features, train)
  preds = {}
  for nb, it in zip(val, features_bow.items(featurizer, val)):
    n = nb.n_code
    sim = it["sim"].astype(np.float32)[n:, :n]
    keys = (sim.argmax(1) + 0.5) / (n + 1) if n else np.full(nb.n_markdown, 0.5)
    preds[nb.id] = decode.order_from_keys(nb, keys)
  return preds


def _nearest_code(nb: Notebook, sim: np.ndarray) -> list[str]:
  """Order with each markdown cell just before its most similar code cell (`sim`: file order)."""
  code = [i for i, t in enumerate(nb.cell_types) if t == "code"]
  md = [i for i, t in enumerate(nb.cell_types) if t != "code"]
  n = len(code)
  keys = ((sim[np.ix_(md, code)].argmax(1) + 0.5) / (n + 1) if n
          else np.full(len(md), 0.5))
  return decode.order_from_keys(nb, keys)


def lexical_nearest_code(train: Sequence[Notebook], val: Sequence[Notebook]
                         ) -> dict[str, list[str]]:
  """Nearest code cell by the per-notebook word TF-IDF cosine (`bow.lexical_sim`); no training."""
  del train
  from jaxrank.text import bow
  return {nb.id: _nearest_code(nb, bow.lexical_sim(nb.sources)) for nb in val}


def encoder_nearest_code(workspace: str, encoder: str, lexical: bool = False) -> Ranker:
  """DESIGN.md's frozen-encoder heuristic: nearest code cell by the encoder's cosine
  (plus the lexical cosine with `lexical`); vectors from the run cache."""
  def ranker(train: Sequence[Notebook], val: Sequence[Notebook]) -> dict[str, list[str]]:
    del train
    from jaxrank.text import bow
    from jaxrank.features import encoder as ef
    f = ef.from_config({"workspace": workspace, "encoder": encoder})
    vecs = f.vectors([s for nb in val for s in nb.sources]).astype(np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-6)
    preds, a = {}, 0
    for nb in val:
      v = vecs[a:a + nb.n_cells]
      a += nb.n_cells
      sim = v @ v.T + (bow.lexical_sim(nb.sources) if lexical else 0.0)
      preds[nb.id] = _nearest_code(nb, sim)
    return preds
  return ranker


def trained(config_module: str, data_dir: str, fold: int, n_folds: int, seed: int,
            overrides: Sequence[str] = ()) -> Ranker:
  """One of our rankers (`experiments/configs/<config_module>.py`), trained by the real
  trainer on the same fold (in a temp workdir), then predicting `val`."""
  def ranker(train: Sequence[Notebook], val: Sequence[Notebook]) -> dict[str, list[str]]:
    import importlib
    import tempfile
    from jaxrank import train as trainer
    config = importlib.import_module(f"experiments.configs.{config_module}").get_config()
    config.data.data_dir, config.data.fold = data_dir, fold
    config.data.n_folds, config.data.seed = n_folds, seed
    config.update_from_flattened_dict(common.overrides(overrides))
    with tempfile.TemporaryDirectory() as wd:
      trainer.train_and_evaluate(config, wd)
      predictor, _ = trainer.load_predictor(wd)
      return predictor.predict(val)
  return ranker


BASELINES: dict[str, Ranker] = {
    "order_as_given": order_as_given,
    "markdown_first": markdown_first,
    "xgb_ranker": xgb_ranker,
    "tfidf_ridge": tfidf_ridge,
    "tfidf_nearest_code": tfidf_nearest_code,
    "lexical_nearest_code": lexical_nearest_code,
}


# -------------------------------------------------------------- running a table
def load_fold(data_dir: str, fold: int = 0, n_folds: int = 5, seed: int = 0,
              cache_dir: str | None = None) -> tuple[list[Notebook], list[Notebook]]:
  """(train, val) notebooks of the ancestor-grouped fold."""
  nbs = nb_io.load_split(data_dir, split="train", cache_dir=cache_dir)
  return folds.split_train_val(nbs, fold=fold, n_folds=n_folds, seed=seed)


def run_ranker(ranker: Ranker, train: Sequence[Notebook], val: Sequence[Notebook]) -> dict[str, float]:
  """Runs one ranker and scores it on `val`; adds `seconds` (fit + predict)."""
  t = time.perf_counter()
  preds = ranker(train, val)
  seconds = time.perf_counter() - t
  result = submission.score_submission(preds, val)
  result["seconds"] = seconds
  return result


def run_rankers(rankers: Mapping[str, Ranker], train: Sequence[Notebook],
                val: Sequence[Notebook], log: Callable[[str], None] | None = print
                ) -> dict[str, dict[str, float]]:
  """Runs and scores every ranker; returns {name: metrics}."""
  rows = {}
  for name, ranker in rankers.items():
    rows[name] = run_ranker(ranker, train, val)
    if log:
      log(f"{name}: kendall_tau {rows[name]['kendall_tau']:.4f} ({rows[name]['seconds']:.1f}s)")
  return rows


_COLUMNS = [
    ("kendall_tau", "tau"), ("tau_median", "tau_med"), ("tau_p10", "tau_p10"),
    ("pairwise_accuracy", "pair_acc"), ("spearman", "spearman"),
    ("markdown_placement_accuracy", "md_place"), ("exact_order_rate", "exact"),
    ("mean_abs_position_error", "pos_err"), ("seconds", "seconds"),
]


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
  """A fixed-width text table, one row per ranker."""
  width = max([len("method")] + [len(k) for k in rows])
  lines = [f"{'method':{width}s} " + " ".join(f"{h:>9s}" for _, h in _COLUMNS)]
  for name, r in rows.items():
    cells = []
    for key, _ in _COLUMNS:
      v = r.get(key, float("nan"))
      cells.append(f"{v:9.1f}" if key == "seconds" else f"{v:9.4f}")
    lines.append(f"{name:{width}s} " + " ".join(cells))
  return "\n".join(lines)


_DATA_DIR = flags.DEFINE_string("data_dir", None, "Competition-format folder (train/ + csv).")
_FOLD = flags.DEFINE_integer("fold", 0, "Validation fold.")
_N_FOLDS = flags.DEFINE_integer("n_folds", 5, "Number of ancestor-grouped folds.")
_SEED = flags.DEFINE_integer("seed", 0, "Fold seed.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Optional cache folder for the loader.")
_ONLY = flags.DEFINE_list("only", None, f"Subset of rows to run, from {list(BASELINES)}.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the table (atomic write).")
_BOW = flags.DEFINE_bool("bow_mlp", True, "Also train and score our BOW-MLP (row 'bow_mlp').")
_BOW_OVERRIDES = flags.DEFINE_list("bow_overrides", [], "config overrides, e.g. train.epochs=4")
_ENCODER = flags.DEFINE_string("encoder", None, "Store encoder (e.g. minilm-l6): adds the "
                               "frozen-encoder nearest-code rows and the RoBERTa cells ranker.")
_WORKSPACE = flags.DEFINE_string("workspace", "workspace", "Workspace holding the store.")
_CELLS_OVERRIDES = flags.DEFINE_list("cells_overrides", [], "roberta_cells config overrides.")


def main(argv: Sequence[str]) -> None:
  del argv
  train, val = load_fold(_DATA_DIR.value, _FOLD.value, _N_FOLDS.value, _SEED.value,
                         _CACHE_DIR.value)
  print(f"fold {_FOLD.value}/{_N_FOLDS.value}: train {len(train)} notebooks "
        f"({sum(nb.n_cells for nb in train)} cells), val {len(val)} notebooks "
        f"({sum(nb.n_cells for nb in val)} cells)")
  names = _ONLY.value or list(BASELINES)
  unknown = [n for n in names if n not in BASELINES]
  if unknown:
    raise app.UsageError(f"unknown rows {unknown}; choose from {list(BASELINES)}")
  rankers = {n: BASELINES[n] for n in names}
  fold_args = (_DATA_DIR.value, _FOLD.value, _N_FOLDS.value, _SEED.value)
  if _BOW.value:
    rankers["bow_mlp"] = trained("bow_mlp", *fold_args, _BOW_OVERRIDES.value)
  if _ENCODER.value:
    ws, enc = str(Path(_WORKSPACE.value).absolute()), _ENCODER.value
    rankers[f"{enc}_nearest_code"] = encoder_nearest_code(ws, enc)
    rankers[f"{enc}+lexical_nearest_code"] = encoder_nearest_code(ws, enc, lexical=True)
    rankers["roberta_cells"] = trained(
        "roberta_cells", *fold_args,
        [f"features.workspace={ws}", f"features.encoder={enc}", *_CELLS_OVERRIDES.value])
  rows = run_rankers(rankers, train, val)
  print(format_table(rows))
  if _OUT.value:
    io_utils.atomic_write_json(_OUT.value, {
        "data_dir": _DATA_DIR.value, "fold": _FOLD.value, "n_folds": _N_FOLDS.value,
        "seed": _SEED.value, "rows": rows})


if __name__ == "__main__":
  flags.mark_flag_as_required("data_dir")
  app.run(main)
