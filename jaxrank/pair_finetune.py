"""Contrastive fine-tuning of a stored encoder on (markdown, next code) pairs.

    finetune(config, ws, notebooks, workdir) -> {"manifest", "history", "steps"}

Every ranker on frozen cell vectors places a markdown cell by its similarity to
the code cells around each gap, and gap placement is where nearly all the error
is (fold 0 of nbcorpus: with the true gaps and the model's within-gap order
tau is 0.995; with the model's gaps and the true within-gap order, 0.746). A
general sentence encoder (MiniLM) was never taught that a markdown cell
describes the code that follows it. This teaches it:

1. Pairs: in each training notebook's true order, every code cell directly
   preceded by a markdown cell gives one (that markdown, that code) pair.
2. Batches: a notebook's pairs stay together (chunks of `pairs_per_notebook`),
   so most in-batch negatives are other code cells of the same notebook, the
   ones the ranker must tell apart. `batch(step)` is a pure function of
   (seed, step): a resumed run sees the same batches.
3. Loss: symmetric InfoNCE over the batch on the cosine of mean-pooled
   vectors (the featurizer's pooling), temperature `train.temperature`.
4. Training: `jaxrank.loop.run_steps` (AdamW, warmup + cosine, clipping, batch
   sharded over the "data" axis, Orbax checkpoints, auto-resume).
5. Saving: the encoder with the starting model's tokenizer, as an HF folder
   imported into the store as `model.save_as`; featurizers load it by name.

Only the notebooks given are read: pass the training fold, never the
validation fold (the entry point does; `data.fold`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrank import hf, loop, store
from jaxrank.data import folds
from jaxrank.data.types import CODE, MARKDOWN, Notebook
from jaxrank.models import roberta
from jaxrank.features import subword as sw
from jaxrank.text import markup

log = logging.getLogger(__name__)

# Padded widths (tokens) a batch is cut to: few shapes, few compiles.
WIDTH_STEP = 32


def notebook_pairs(nb: Notebook) -> list[tuple[str, str]]:
  """(markdown source, code source) for each code cell right after a markdown cell."""
  if nb.order is None:
    raise ValueError(f"notebook {nb.id}: no true order (pairs need a training split)")
  source = dict(zip(nb.cell_ids, nb.sources))
  kind = dict(zip(nb.cell_ids, nb.cell_types))
  return [(source[a], source[b]) for a, b in zip(nb.order, nb.order[1:])
          if kind[a] is MARKDOWN and kind[b] is CODE]


def training_notebooks(notebooks: Sequence[Notebook], data_cfg) -> list[Notebook]:
  """The notebooks whose orders fine-tuning may read: the rankers' training side of
  `folds.split_by_config` (all but `data.val_sources` / `data.val_ancestors` if set,
  else all but ancestor-grouped fold `data.fold` of `data.n_folds`; fold < 0: all)."""
  return folds.split_by_config(notebooks, data_cfg)[0]


class PairBatches:
  """Tokenized pairs grouped by notebook; batch(step) -> {"ids": [2B, W]} (markdown rows, then code)."""

  def __init__(self, md_ids: np.ndarray, code_ids: np.ndarray, notebook_of: np.ndarray,
               batch_size: int, per_notebook: int, pad_id: int, seed: int):
    if len(md_ids) < batch_size:
      raise ValueError(f"{len(md_ids)} (markdown, code) pairs, fewer than "
                       f"train.batch_size={batch_size}")
    self.md, self.code = md_ids, code_ids
    self.bs, self.per_nb, self.pad, self.seed = batch_size, per_notebook, pad_id, seed
    self.per_epoch = len(md_ids) // batch_size
    self.groups = [np.flatnonzero(notebook_of == j) for j in np.unique(notebook_of)]

  def _plan(self, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, epoch])
    chunks = []
    for group in self.groups:
      ix = rng.permutation(group)
      chunks += [ix[s:s + self.per_nb] for s in range(0, len(ix), self.per_nb)]
    return np.concatenate([chunks[i] for i in rng.permutation(len(chunks))])

  def batch(self, step: int) -> dict[str, np.ndarray]:
    epoch, i = divmod(step, self.per_epoch)
    if getattr(self, "_epoch", None) != epoch:
      self._order, self._epoch = self._plan(epoch), epoch
    ix = self._order[i * self.bs:(i + 1) * self.bs]
    ids = np.concatenate([self.md[ix], self.code[ix]])
    width = int((ids != self.pad).sum(1).max())
    width = min(ids.shape[1], -(-max(width, 1) // WIDTH_STEP) * WIDTH_STEP)
    return {"ids": ids[:, :width]}


def pair_loss(vecs_2BxH: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """Symmetric InfoNCE: row i of the markdown half matches row i of the code half."""
  v = vecs_2BxH.astype(jnp.float32)
  v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-6)
  b = v.shape[0] // 2
  logits_BxB = v[:b] @ v[b:].T / temperature
  labels = jnp.arange(b)
  nll_md = -jnp.take_along_axis(jax.nn.log_softmax(logits_BxB, 1), labels[:, None], 1)
  nll_code = -jnp.take_along_axis(jax.nn.log_softmax(logits_BxB, 0), labels[None, :], 0)
  loss = 0.5 * (nll_md.mean() + nll_code.mean())
  acc = (logits_BxB.argmax(1) == labels).mean()
  return loss, acc


def finetune(config, ws: store.Workspace, notebooks: Sequence[Notebook],
             workdir: str | Path, should_stop=None) -> dict[str, Any]:
  """Fine-tunes store model `config.model.init_from`; stores it as `config.model.save_as`.

  Resumes from `workdir`; stopped early by `should_stop` it stores nothing."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  mesh = loop.make_mesh()
  repl = NamedSharding(mesh, P())
  cfg, params, tok = hf.load_encoder(ws, config.model.init_from, check_hashes=False,
                                     sharding=repl)
  cfg = cfg.replace(dtype=config.model.dtype)
  pairs, owner = [], []
  for j, nb in enumerate(notebooks):
    for p in notebook_pairs(nb):
      pairs.append(p)
      owner.append(j)
  if not pairs:
    raise ValueError("no (markdown, next code) pairs in the given notebooks")
  max_tokens, max_chars = config.data.max_tokens, config.data.max_chars
  md_texts = [m for m, _ in pairs]
  if config.data.get("readable_markdown", False):  # as the featurizer will read them
    md_texts = [markup.readable(m) for m in md_texts]
  md_ids = sw.tokenize(tok, md_texts, max_tokens, max_chars)
  code_ids = sw.tokenize(tok, [c for _, c in pairs], max_tokens, max_chars)
  bs = config.train.batch_size
  if (2 * bs) % jax.device_count():
    raise ValueError(f"2 x train.batch_size={bs} is not a multiple of {jax.device_count()} "
                     "devices")
  batches = PairBatches(md_ids, code_ids, np.asarray(owner), bs, config.train.pairs_per_notebook,
                        tok.pad_token_id, config.data.seed)
  total = config.train.steps or int(round(config.train.epochs * batches.per_epoch))
  log.info("pair fine-tune of %r: %d notebooks -> %d pairs, %d steps (%d per epoch), %.1fs",
           config.model.init_from, len(notebooks), len(pairs), total, batches.per_epoch,
           time.time() - t0)

  model = roberta.Encoder(cfg)
  tx, schedule = loop.make_optimizer(config.optim, total)
  state, state_sh = loop.state_from_params(params, model.apply, tx, mesh)
  temperature = float(config.train.temperature)

  def loss(apply_fn, p, batch, rng):
    ids = batch["ids"]
    mask = (ids != cfg.pad_token_id).astype(jnp.int32)
    h = apply_fn({"params": p}, ids, mask, deterministic=False, rngs={"dropout": rng})
    l, acc = pair_loss(roberta.mean_pool(h, mask), temperature)
    return l, {"loss": l, "pair_acc": acc}

  step_fn = loop.jit_step(loss, schedule, state_sh, mesh)
  rng = jax.random.key(config.train.seed, impl="unsafe_rbg")
  state, history, step = loop.run_steps(
      "pair_finetune", state, step_fn, batches.batch, rng, mesh=mesh, total=total,
      workdir=workdir, batch_size=2 * bs, log_every=config.train.log_every,
      checkpoint_every=config.train.checkpoint_every, should_stop=should_stop)
  manifest = None
  if jax.process_index() == 0 and step >= total:
    # The export writes float32 weights; the training compute dtype is not stored.
    manifest = hf.save_encoder(
        ws, config.model.save_as, jax.device_get(state.params), cfg, tok,
        source_label=f"jaxrank.pair_finetune:{config.model.init_from}:{workdir}@{total}")
  return {"manifest": manifest, "history": history, "steps": step, "total": total,
          "pairs": len(pairs)}
